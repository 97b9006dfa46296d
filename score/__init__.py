"""The score room: turns (prompt, response) pairs into numbers: the reward model, or any Scorer a config names."""
