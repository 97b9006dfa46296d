"""The score room: turns (prompt, response) pairs into numbers (reward model or programmatic judge)."""
