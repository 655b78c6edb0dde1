"""Hive's n8n-compatible workflow engine (Django-free). See contract.py."""
