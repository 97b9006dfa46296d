"""The generate room: the attacker writes prompts, the defender answers them (vLLM)."""
