"""Agents: the people and partners commission is paid to (the CRM's core record)."""
