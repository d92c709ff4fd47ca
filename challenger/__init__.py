"""challenger: the agent that re-executes posted results and disputes wrong ones."""
