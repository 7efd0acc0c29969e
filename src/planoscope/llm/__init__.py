"""What LLM calls mean beyond their spans: what they cost."""
