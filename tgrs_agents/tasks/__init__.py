"""Task sources: built-in verifiable task families and JSONL task files."""
