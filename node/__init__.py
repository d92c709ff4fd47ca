"""node: the prover daemon that serves inference requests and defends its results."""
