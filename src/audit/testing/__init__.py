"""Test fixtures, reference zoo tables and synthetic disguises; never imported by the CLI."""
