"""Notes on agents: free-text CRM notes, visible to the staff who work with the agent."""
