"""Test and benchmark harnesses on top of everything: the fault campaign (`make fault-campaign`) and the
load test (`bench/load.py`). Nothing below the command line imports them."""
