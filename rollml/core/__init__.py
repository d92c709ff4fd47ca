"""The shared core of rollml: chain access, deployments and the contract artifacts, the pure dispute solver,
execution (what provers and challengers run, the traces games are played on), the agents' store and the
dApp SDK. It uses mipsvm and mlkit; node, challenger and everything above use it."""
