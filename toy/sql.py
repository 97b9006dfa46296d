"""The toy experiment's SQL: its `evals` table, beside the rounds' own tables (`data.sql`), which it never changes.

Evaluations outside the round's stages: held-out prompts answered by a round's defender, and the attack probes
(the attacker before / after its reward-weighted step against the same defender). Created on first use.
"""

EVALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS evals (
    round INTEGER NOT NULL,             -- the round whose defender answered (round R+1: the last trained one)
    kind VARCHAR NOT NULL,              -- heldout | attack_before | attack_after
    idx INTEGER NOT NULL,
    attacker_model VARCHAR,
    defender_model VARCHAR NOT NULL,
    prompt VARCHAR NOT NULL,
    category VARCHAR,
    response VARCHAR NOT NULL,
    reward DOUBLE NOT NULL,
    PRIMARY KEY (round, kind, idx)
)
"""
INSERT_EVALS = "INSERT INTO evals BY NAME SELECT * FROM _arrow_batch"
EVAL_DONE = "SELECT count(*) FROM evals WHERE round = ? AND kind = ?"
HAS_EVALS = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'evals'"
ALL_EVALS = "SELECT round, kind, idx, prompt, category, response, reward FROM evals ORDER BY round, kind, idx"
ROUND_INSTRUCTIONS = """
SELECT instruction, any_value(category) AS category, min(idx) AS first
FROM prompts WHERE round = ? AND instruction IS NOT NULL GROUP BY instruction ORDER BY first
"""
DELETE_EVALS_OF_KIND = "DELETE FROM evals WHERE kind = ?"
# The hard prompts of each round that got no pair (the report sorts them by the world's categories).
UNPAIRED_HARD = """
SELECT h.round, p.text FROM hard_prompts h JOIN prompts p USING (prompt_id)
ANTI JOIN pairs pr ON pr.round = h.round AND pr.prompt_id = h.prompt_id
ORDER BY h.round, h.rank
"""
