"""What the prover node and the challenger share, as op-challenger splits it: the agent loop (`base`), the
responder that sends the solver's moves (`responder`), chain reads of games and results (`reads`), the
trace process (`traces`), the models an agent serves (`models`), its worker pool (`pool`) and its logs
(`logs`). The decisions themselves are pure and live in `rollml.core.dispute`."""
