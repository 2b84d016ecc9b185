"""Referral links: a short code that sends a visitor to a program's landing page for an agent."""
