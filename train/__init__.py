"""The train room: turns a round's selected data into new attacker and defender models."""
