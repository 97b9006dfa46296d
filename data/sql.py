"""Every SQL statement Sparring runs, by name. Values are always bound as parameters, never formatted in.

The schema is the contract between stages: a stage reads its inputs from these tables and writes its
outputs back in one transaction (see `data.store.Store.stage`).
"""

SCHEMA_VERSION = 1

# Stages of a round, in order. Forcing one redoes it and every stage after it.
STAGES = ("attack", "respond", "score", "resample", "select", "train_defender", "train_attacker")
# What each stage reads (the stages whose output is its input): redoing a stage redoes exactly the stages that
# depend on it, directly or not. The two trainers are independent: the defender reads the pairs, the attacker
# its prompts and their scores.
STAGE_INPUTS = {
    "attack": (),
    "respond": ("attack",),
    "score": ("respond",),
    "resample": ("score",),
    "select": ("score", "resample"),
    "train_defender": ("select",),
    "train_attacker": ("score",),
}

# Which tables hold each stage's output (rows keyed by `round`), so a forced stage can be undone exactly.
STAGE_TABLES = {
    "attack": ("prompts", "seed_prompts"),  # round 1's attack stored the seed file as round 0
    "respond": ("responses",),
    "score": ("scores",),
    "resample": ("scores_resampled", "responses_resampled"),  # the extra answers and their scores only
    "select": ("hard_prompts", "pairs"),
    "train_defender": ("models_defender",),
    "train_attacker": ("attacker_rewards", "models_attacker"),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    attacker_model VARCHAR NOT NULL,
    defender_model VARCHAR NOT NULL,
    scorer VARCHAR NOT NULL,
    config_json VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- Round 0 holds the seed prompts; prompts of round r>0 were written by the attacker from `parent_id`.
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id VARCHAR PRIMARY KEY,
    round INTEGER NOT NULL,
    idx INTEGER NOT NULL,               -- order within the round (generation order)
    text VARCHAR NOT NULL,
    category VARCHAR,
    parent_id VARCHAR,                  -- the prompt it was written from (NULL for seeds)
    mode VARCHAR NOT NULL,              -- seed | gpo | eva | replay
    instruction VARCHAR,                -- what the attacker was asked; attacker training input
    attacker_model VARCHAR,
    gen_params VARCHAR                  -- JSON of the sampling parameters
);
CREATE TABLE IF NOT EXISTS responses (
    response_id VARCHAR PRIMARY KEY,
    prompt_id VARCHAR NOT NULL,
    round INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    text VARCHAR NOT NULL,
    finish_reason VARCHAR,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    defender_model VARCHAR NOT NULL,
    gen_params VARCHAR,
    sample_pass INTEGER NOT NULL DEFAULT 0  -- 0: respond's N answers; k > 0: the resample stage's pass k
);
-- stores made before the resample stage existed get the column (every answer of theirs is from respond)
ALTER TABLE responses ADD COLUMN IF NOT EXISTS sample_pass INTEGER DEFAULT 0;
CREATE TABLE IF NOT EXISTS scores (
    response_id VARCHAR NOT NULL,
    scorer VARCHAR NOT NULL,
    round INTEGER NOT NULL,
    value DOUBLE NOT NULL,
    PRIMARY KEY (response_id, scorer)
);
CREATE TABLE IF NOT EXISTS hard_prompts (
    round INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    strategy VARCHAR NOT NULL,
    rank INTEGER NOT NULL,
    informativeness DOUBLE NOT NULL,
    mean_reward DOUBLE NOT NULL,
    reward_gap DOUBLE NOT NULL,
    PRIMARY KEY (round, prompt_id)
);
CREATE TABLE IF NOT EXISTS pairs (
    round INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    chosen_id VARCHAR NOT NULL,
    rejected_id VARCHAR NOT NULL,
    chosen_reward DOUBLE NOT NULL,
    rejected_reward DOUBLE NOT NULL,
    margin DOUBLE NOT NULL,
    PRIMARY KEY (round, prompt_id)
);
-- The attacker's per-prompt reward (GPO: failure + lambda * z-scored diversity) and its training weight;
-- failure is the z-scored -mean defender reward, diversity the raw 1 - closest n-gram Jaccard.
CREATE TABLE IF NOT EXISTS attacker_rewards (
    round INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    failure DOUBLE NOT NULL,
    diversity DOUBLE NOT NULL,
    reward DOUBLE NOT NULL,
    weight DOUBLE NOT NULL,
    PRIMARY KEY (round, prompt_id)
);
-- Models trained from round `round`'s data; round `round + 1` generates with them.
CREATE TABLE IF NOT EXISTS models (
    round INTEGER NOT NULL,
    role VARCHAR NOT NULL,              -- attacker | defender
    path VARCHAR NOT NULL,              -- the player: a stacked LoRA adapter on its base, or a merged model
    adapter_path VARCHAR,
    parent VARCHAR NOT NULL,            -- the model it was trained from
    details VARCHAR,                    -- JSON: loss, steps, metrics
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (round, role)
);
CREATE TABLE IF NOT EXISTS stage_log (
    round INTEGER NOT NULL,
    stage VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    seconds DOUBLE NOT NULL,
    details VARCHAR,                    -- JSON: counts dropped and why, model ids, ...
    finished_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (round, stage)
);
"""

# --- bookkeeping -------------------------------------------------------------------------------------------
HAS_META = "SELECT count(*) > 0 FROM information_schema.tables WHERE table_name = 'meta'"
GET_META = "SELECT value FROM meta WHERE key = ?"
SET_META = "INSERT OR REPLACE INTO meta VALUES (?, ?)"
ANY_STAGE = "SELECT count(*) > 0 FROM stage_log"
STAGE_DONE = "SELECT count(*) FROM stage_log WHERE round = ? AND stage = ?"
LOG_STAGE = "INSERT OR REPLACE INTO stage_log (round, stage, rows, seconds, details) VALUES (?, ?, ?, ?, ?)"
UNLOG_STAGE = "DELETE FROM stage_log WHERE round = ? AND stage = ?"
STAGE_LOG = (
    "SELECT round, stage, rows, seconds, details, finished_at FROM stage_log ORDER BY round, finished_at"
)
ROUND_STAGES = "SELECT stage FROM stage_log WHERE round = ?"
INSERT_ROUND = """
INSERT INTO rounds (round, attacker_model, defender_model, scorer, config_json) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (round) DO UPDATE SET attacker_model = excluded.attacker_model, defender_model = excluded.defender_model,
    scorer = excluded.scorer, config_json = excluded.config_json
"""
STAGE_DETAILS = "SELECT details FROM stage_log WHERE round = ? AND stage = ?"
# The round command's stages (the trainers run under their own command's config, not the round's).
STAGE_CONFIGS = (
    "SELECT round, stage, details FROM stage_log WHERE stage NOT LIKE 'train_%' ORDER BY round, stage"
)
GET_ROUND = "SELECT attacker_model, defender_model, scorer, config_json FROM rounds WHERE round = ?"

# Undo one stage of one round (table names come from STAGE_TABLES, never from users).
DELETE_ROUND_ROWS = {
    "prompts": "DELETE FROM prompts WHERE round = ?",
    "seed_prompts": "DELETE FROM prompts WHERE round = 0 AND ? = 1",  # redoing round 1's attack rereads the seeds
    "responses": "DELETE FROM responses WHERE round = ?",
    "scores": "DELETE FROM scores WHERE round = ?",
    "scores_resampled": """DELETE FROM scores WHERE round = $1 AND response_id IN (
        SELECT response_id FROM responses WHERE round = $1 AND sample_pass > 0)""",
    "responses_resampled": "DELETE FROM responses WHERE round = ? AND sample_pass > 0",
    "hard_prompts": "DELETE FROM hard_prompts WHERE round = ?",
    "pairs": "DELETE FROM pairs WHERE round = ?",
    "attacker_rewards": "DELETE FROM attacker_rewards WHERE round = ?",
    "models_defender": "DELETE FROM models WHERE round = ? AND role = 'defender'",
    "models_attacker": "DELETE FROM models WHERE round = ? AND role = 'attacker'",
}

# History: the rounds after one round, and everything of theirs (a redo of round N with --drop-later removes them,
# since they were played from round N's output).
LATER_ROUNDS = """
SELECT round FROM rounds WHERE round > $1 UNION SELECT DISTINCT round FROM stage_log WHERE round > $1 ORDER BY round
"""
LATER_MODELS = "SELECT round, role, path, adapter_path FROM models WHERE round > ? ORDER BY round, role"
DROP_LATER_ROUNDS = [
    f"DELETE FROM {table} WHERE round > ?"
    for table in (
        "attacker_rewards", "pairs", "hard_prompts", "scores", "responses", "prompts", "models", "stage_log", "rounds",
    )
]  # fmt: skip

# Tables that take Arrow batches, by name (`INSERT ... BY NAME SELECT * FROM <arrow>`).
INSERT_BY_NAME = {
    name: f"INSERT INTO {name} BY NAME SELECT * FROM _arrow_batch"
    for name in ("prompts", "responses", "scores", "attacker_rewards", "models")
}

# --- reads for the stages ----------------------------------------------------------------------------------
ROUND_PROMPTS = """
SELECT prompt_id, round, idx, text, category, parent_id, mode, instruction
FROM prompts WHERE round = ? ORDER BY idx
"""
ALL_PROMPT_TEXTS = "SELECT text FROM prompts"
# The attacker's novelty buffer: every prompt of the rounds before (seeds included: repeating one is no news).
EARLIER_PROMPT_TEXTS = "SELECT text FROM prompts WHERE round < ? ORDER BY round, idx"
# Every scored answer of a round under one scorer, by prompt (what the resample stage decides from).
ROUND_SCORED_RESPONSES = """
SELECT r.prompt_id, p.text AS prompt, r.response_id, r.sample_index, r.text AS response, s.value
FROM responses r JOIN prompts p USING (prompt_id)
JOIN scores s ON s.response_id = r.response_id AND s.scorer = $scorer
WHERE r.round = $round ORDER BY p.idx, r.sample_index
"""
ROUND_RESPONSES = """
SELECT r.response_id, r.prompt_id, r.sample_index, p.text AS prompt, r.text AS response
FROM responses r JOIN prompts p USING (prompt_id)
WHERE r.round = ? ORDER BY p.idx, r.sample_index
"""
# The parents of round r+1: round r's hard prompts, hardest first, with what they were written from.
HARD_PROMPTS = """
SELECT h.prompt_id, p.text, p.category, h.rank, h.informativeness, h.mean_reward, h.reward_gap
FROM hard_prompts h JOIN prompts p USING (prompt_id)
WHERE h.round = ? ORDER BY h.rank
"""
ROUND_PAIRS = """
SELECT p.prompt_id, p.text AS prompt, c.text AS chosen, r.text AS rejected,
       pr.chosen_reward, pr.rejected_reward, pr.margin
FROM pairs pr
JOIN prompts p ON p.prompt_id = pr.prompt_id
JOIN responses c ON c.response_id = pr.chosen_id
JOIN responses r ON r.response_id = pr.rejected_id
WHERE pr.round = ? ORDER BY p.idx
"""
# Per-prompt reward statistics of one round under one scorer (the input of selection and of reports), over the
# respond stage's N answers only: every prompt is judged on as many answers at the same temperature, whether or
# not the resample stage added more (those count for pairs).
PROMPT_STATS = """
SELECT r.prompt_id, any_value(p.idx) AS idx, count(*) AS n,
       avg(s.value) AS mean_reward, min(s.value) AS min_reward, max(s.value) AS max_reward,
       coalesce(stddev_pop(s.value), 0) AS std_reward, max(s.value) - min(s.value) AS reward_gap
FROM responses r
JOIN scores s USING (response_id)
JOIN prompts p USING (prompt_id)
WHERE r.round = $round AND s.scorer = $scorer AND r.sample_pass = 0
GROUP BY r.prompt_id
"""
MODEL_FOR_ROUND = "SELECT path FROM models WHERE round = ? AND role = ?"
LATEST_MODEL = "SELECT path FROM models WHERE role = ? AND round < ? ORDER BY round DESC LIMIT 1"

# --- selection (GPO / eva) ---------------------------------------------------------------------------------
# Hard prompts: GPO wants prompts where the defender does worst (lowest mean reward); eva wants the most
# informative ones (largest max - min reward gap, its default regret proxy). Deterministic top-k:
# k = ceil(fraction * prompts), ties broken by generation order.
SELECT_HARD = f"""
INSERT INTO hard_prompts
WITH stats AS ({PROMPT_STATS}),
scored AS (
    SELECT *, CASE WHEN $strategy = 'gpo' THEN -mean_reward ELSE reward_gap END AS informativeness
    FROM stats
),
ranked AS (
    SELECT *, row_number() OVER (ORDER BY informativeness DESC, idx) AS rank, count(*) OVER () AS total
    FROM scored
)
SELECT $round, prompt_id, $strategy, rank, informativeness, mean_reward, reward_gap
FROM ranked WHERE rank <= greatest(1, ceil($fraction * total))
"""
# Pairs: best vs worst response of each prompt (ties broken by sample index), kept only when the best
# beats the worst by at least `margin` and strictly (equal rewards carry no preference), and the best is
# not an empty answer.
SELECT_PAIRS = """
INSERT INTO pairs
WITH s AS (
    -- trim() strips Unicode spaces but not tabs or newlines; the regexp removes those (as Python's strip)
    SELECT r.prompt_id, r.response_id, r.sample_index, sc.value,
        trim(regexp_replace(r.text, '\\s+', '', 'g')) = '' AS empty
    FROM responses r JOIN scores sc USING (response_id)
    WHERE r.round = $round AND sc.scorer = $scorer
),
ranked AS (
    SELECT *,
        -- an empty or whitespace-only answer is never "chosen", whatever the scorer thought of it
        row_number() OVER (PARTITION BY prompt_id ORDER BY empty, value DESC, sample_index) AS best,
        row_number() OVER (PARTITION BY prompt_id ORDER BY value ASC, sample_index) AS worst
    FROM s
)
SELECT $round, c.prompt_id, c.response_id, w.response_id, c.value, w.value, c.value - w.value
FROM ranked c JOIN ranked w ON c.prompt_id = w.prompt_id AND c.best = 1 AND w.worst = 1
WHERE c.value > w.value AND c.value - w.value >= $margin AND NOT c.empty
"""
# Pair yield: how many of a round's hard prompts gave a pair (the prompts the attacker won on should).
HARD_WITH_PAIR = """
SELECT count(*) FROM hard_prompts h JOIN pairs p ON p.round = h.round AND p.prompt_id = h.prompt_id
WHERE h.round = ?
"""
COUNT_ROUND = {
    name: f"SELECT count(*) FROM {name} WHERE round = ?"
    for name in ("prompts", "responses", "scores", "hard_prompts", "pairs", "attacker_rewards", "models")
}

# --- export (data.export) ----------------------------------------------------------------------------------
# One round as the rows of a published dataset, shaped entirely in SQL: conversational columns are DuckDB
# list-of-struct literals, which arrive in Arrow as list<struct<role, content>>, the message format TRL reads.
EXPORT_DEFENDER_DPO = """
SELECT [{'role': 'user', 'content': p.text}] AS prompt,
       [{'role': 'assistant', 'content': c.text}] AS chosen,
       [{'role': 'assistant', 'content': r.text}] AS rejected,
       pr.prompt_id, pr.chosen_id, pr.rejected_id,
       pr.chosen_reward, pr.rejected_reward, pr.margin, pr.round
FROM pairs pr
JOIN prompts p ON p.prompt_id = pr.prompt_id
JOIN responses c ON c.response_id = pr.chosen_id
JOIN responses r ON r.response_id = pr.rejected_id
WHERE pr.round = ? ORDER BY p.idx
"""
# The attacker's own prompts (replayed ones have no instruction: nothing to learn from); reward and weight
# stay NULL until train_attacker has filled attacker_rewards for the round.
EXPORT_ATTACKER_SFT = """
SELECT p.instruction, p.text AS prompt,
       [{'role': 'user', 'content': p.instruction}, {'role': 'assistant', 'content': p.text}] AS messages,
       a.reward, a.weight, a.failure, a.diversity,
       p.prompt_id, p.parent_id, p.category, p.mode, p.attacker_model, p.round
FROM prompts p
LEFT JOIN attacker_rewards a ON a.round = p.round AND a.prompt_id = p.prompt_id
WHERE p.round = ? AND p.instruction IS NOT NULL
ORDER BY p.idx
"""
# Every response scored by the round's scorer (the one selection used).
EXPORT_RESPONSES = """
SELECT p.text AS prompt, r.text AS response, r.sample_index, s.value AS reward, s.scorer,
       r.response_id, r.prompt_id, p.category, p.mode, r.finish_reason, r.prompt_tokens, r.completion_tokens,
       p.attacker_model, r.defender_model, r.round
FROM responses r
JOIN prompts p ON p.prompt_id = r.prompt_id
JOIN rounds rd ON rd.round = r.round
JOIN scores s ON s.response_id = r.response_id AND s.scorer = rd.scorer
WHERE r.round = ? ORDER BY p.idx, r.sample_index
"""
# What a dataset card says about each round: players, counts, reward statistics (under the round's scorer).
CARD_ROUNDS = """
WITH rs AS (
    SELECT rd.round, count(s.value) AS scored, avg(s.value) AS reward_mean,
           coalesce(stddev_pop(s.value), 0) AS reward_std, min(s.value) AS reward_min, max(s.value) AS reward_max
    FROM rounds rd LEFT JOIN scores s ON s.round = rd.round AND s.scorer = rd.scorer
    GROUP BY rd.round
),
ps AS (
    SELECT round, count(*) AS pairs, avg(margin) AS margin_mean, avg(chosen_reward) AS chosen_mean,
           avg(rejected_reward) AS rejected_mean
    FROM pairs GROUP BY round
),
pc AS (SELECT round, count(*) AS prompts, count(instruction) AS attacker_prompts FROM prompts GROUP BY round),
rc AS (SELECT round, count(*) AS responses FROM responses GROUP BY round),
hc AS (SELECT round, count(*) AS hard_prompts FROM hard_prompts GROUP BY round),
ac AS (SELECT round, count(*) AS attacker_rewards, avg(reward) AS attacker_reward_mean
       FROM attacker_rewards GROUP BY round),
sl AS (SELECT round, details AS select_details FROM stage_log WHERE stage = 'select')
SELECT rd.round, rd.attacker_model, rd.defender_model, rd.scorer, rd.config_json,
       CAST(rd.started_at AS VARCHAR) AS started_at,
       coalesce(pc.prompts, 0) AS prompts, coalesce(pc.attacker_prompts, 0) AS attacker_prompts,
       coalesce(rc.responses, 0) AS responses, rs.scored, coalesce(hc.hard_prompts, 0) AS hard_prompts,
       coalesce(ps.pairs, 0) AS pairs, coalesce(ac.attacker_rewards, 0) AS attacker_rewards,
       rs.reward_mean, rs.reward_std, rs.reward_min, rs.reward_max,
       ps.margin_mean, ps.chosen_mean, ps.rejected_mean, ac.attacker_reward_mean, sl.select_details
FROM rounds rd
JOIN rs USING (round)
LEFT JOIN ps USING (round) LEFT JOIN pc USING (round) LEFT JOIN rc USING (round)
LEFT JOIN hc USING (round) LEFT JOIN ac USING (round) LEFT JOIN sl USING (round)
ORDER BY rd.round
"""
CARD_STAGE_CONFIGS = "SELECT round, stage, details FROM stage_log WHERE round > 0 ORDER BY round, finished_at"
CARD_MODELS = """
SELECT round, role, path, parent, CAST(created_at AS VARCHAR) AS created_at FROM models ORDER BY round, role
"""

# --- training (train.defender / train.attacker) ------------------------------------------------------------
MODEL_ROW = """
SELECT round, role, path, adapter_path, parent, details, created_at FROM models WHERE round = ? AND role = ?
"""
ROUND_SCORERS = "SELECT DISTINCT scorer FROM scores WHERE round = ? ORDER BY scorer"
# The attacker's own prompts of a round (those with an instruction: not seeds, not replays) with the defender's
# mean reward on them under one scorer; prompts with no scored response are left out.
ATTACKER_PROMPTS = """
SELECT p.prompt_id, p.text, p.instruction, avg(s.value) AS mean_reward, count(*) AS responses
FROM prompts p
JOIN responses r ON r.prompt_id = p.prompt_id
JOIN scores s ON s.response_id = r.response_id AND s.scorer = $scorer
WHERE p.round = $round AND p.instruction IS NOT NULL AND r.sample_pass = 0
GROUP BY p.prompt_id, p.idx, p.text, p.instruction
ORDER BY p.idx
"""

# --- invariants (data.check): each query counts the rows that break one rule -------------------------------
INVARIANTS = {
    "every response has a prompt of the same round": """
        SELECT count(*) FROM responses r LEFT JOIN prompts p USING (prompt_id)
        WHERE p.prompt_id IS NULL OR p.round <> r.round""",
    "every score has a response of the same round": """
        SELECT count(*) FROM scores s LEFT JOIN responses r USING (response_id)
        WHERE r.response_id IS NULL OR r.round <> s.round""",
    "every score is finite": "SELECT count(*) FROM scores WHERE NOT isfinite(value)",
    "every pair is two distinct scored responses of its prompt, chosen above rejected": """
        SELECT count(*) FROM pairs pr
        LEFT JOIN responses c ON c.response_id = pr.chosen_id
        LEFT JOIN responses w ON w.response_id = pr.rejected_id
        LEFT JOIN scores sc ON sc.response_id = pr.chosen_id AND sc.round = pr.round
        LEFT JOIN scores sw ON sw.response_id = pr.rejected_id AND sw.round = pr.round
        WHERE pr.chosen_id = pr.rejected_id OR c.prompt_id IS DISTINCT FROM pr.prompt_id
           OR w.prompt_id IS DISTINCT FROM pr.prompt_id OR sc.value IS NULL OR sw.value IS NULL
           OR pr.chosen_reward <= pr.rejected_reward""",
    "every hard prompt is a prompt of its round": """
        SELECT count(*) FROM hard_prompts h LEFT JOIN prompts p USING (prompt_id)
        WHERE p.prompt_id IS NULL OR p.round <> h.round""",
    "every parent is a prompt of an earlier round": """
        SELECT count(*) FROM prompts c LEFT JOIN prompts p ON p.prompt_id = c.parent_id
        WHERE c.parent_id IS NOT NULL AND (p.prompt_id IS NULL OR p.round >= c.round)""",
    "every attacker reward is a prompt of its round": """
        SELECT count(*) FROM attacker_rewards a LEFT JOIN prompts p USING (prompt_id)
        WHERE p.prompt_id IS NULL OR p.round <> a.round OR a.weight < 0""",
    "no stage output without its stage-log row": """
        SELECT count(*) FROM (
            SELECT DISTINCT round, 'attack' AS stage FROM prompts WHERE round > 0
            UNION SELECT DISTINCT round, 'respond' FROM responses
            UNION SELECT DISTINCT round, 'score' FROM scores
            UNION SELECT DISTINCT round, 'resample' FROM responses WHERE sample_pass > 0
            UNION SELECT DISTINCT round, 'select' FROM hard_prompts
            UNION SELECT DISTINCT round, 'select' FROM pairs
            UNION SELECT DISTINCT round, 'train_defender' FROM models WHERE role = 'defender'
            UNION SELECT DISTINCT round, 'train_attacker' FROM models WHERE role = 'attacker'
        ) o ANTI JOIN stage_log l USING (round, stage)""",
    "every logged stage's earlier stages are logged": """
        SELECT count(*) FROM stage_log l
        WHERE (l.stage IN ('respond', 'score', 'select') AND NOT EXISTS (
                  SELECT 1 FROM stage_log e WHERE e.round = l.round AND e.stage = 'attack'))
           OR (l.stage IN ('score', 'select') AND NOT EXISTS (
                  SELECT 1 FROM stage_log e WHERE e.round = l.round AND e.stage = 'respond'))
           OR (l.stage = 'select' AND NOT EXISTS (
                  SELECT 1 FROM stage_log e WHERE e.round = l.round AND e.stage = 'score'))""",
}
# trained models (a carried-over one has no adapter: its path is its parent, which need not be local)
MODEL_DETAILS = "SELECT round, role, details FROM models ORDER BY round, role"
MODEL_PATHS = "SELECT round, role, path FROM models WHERE adapter_path IS NOT NULL ORDER BY round, role"

# --- the run report (data.report) ---------------------------------------------------------------------------
# Every scored response of the run under its round's scorer, with its prompt (the report's main input).
REPORT_RESPONSES = """
SELECT r.round, p.prompt_id, p.text AS prompt, p.mode, r.text AS response, s.value AS reward
FROM responses r
JOIN prompts p ON p.prompt_id = r.prompt_id
JOIN rounds rd ON rd.round = r.round
JOIN scores s ON s.response_id = r.response_id AND s.scorer = rd.scorer
WHERE r.sample_pass = 0  -- the defender as it answers: the resample stage's extra answers are for pairs
ORDER BY r.round, p.idx, r.sample_index
"""
REPORT_PROMPTS = "SELECT round, text, mode FROM prompts WHERE round > 0 ORDER BY round, idx"
REPORT_PAIRS = "SELECT round, chosen_reward, rejected_reward, margin FROM pairs ORDER BY round"
REPORT_ROUNDS = "SELECT round, scorer, config_json FROM rounds ORDER BY round"
# One scorer's values of a round's first-pass answers (the round's scorer, or one part of a combined scorer).
REPORT_SCORES = """
SELECT s.value
FROM responses r JOIN scores s ON s.response_id = r.response_id AND s.scorer = $scorer
WHERE r.round = $round AND r.sample_pass = 0
ORDER BY r.response_id
"""
# Attack success by the prompts' category, under the round's scorer and a failure threshold.
REPORT_FAILURES_BY_CATEGORY = """
SELECT p.category, avg(CASE WHEN s.value < $below THEN 1.0 ELSE 0.0 END) AS attack_success, count(*) AS answers
FROM responses r
JOIN prompts p USING (prompt_id)
JOIN scores s ON s.response_id = r.response_id AND s.scorer = $scorer
WHERE r.round = $round AND r.sample_pass = 0 AND p.category IS NOT NULL
GROUP BY p.category ORDER BY p.category
"""
# Per round, the `k` prompts the defender did worst on (ranked without reading any text), each with its best and
# worst answer (all passes).
REPORT_HARDEST = """
WITH ranked AS (
    SELECT r.round, r.prompt_id, avg(s.value) AS mean_reward, count(*) AS answers,
           row_number() OVER (PARTITION BY r.round ORDER BY avg(s.value), r.prompt_id) AS rank
    FROM responses r
    JOIN rounds rd ON rd.round = r.round
    JOIN scores s ON s.response_id = r.response_id AND s.scorer = rd.scorer
    GROUP BY r.round, r.prompt_id
), hardest AS (SELECT * FROM ranked WHERE rank <= $k)
SELECT h.round, h.rank, any_value(p.text) AS prompt, h.mean_reward, h.answers,
       arg_max(r.text, s.value) AS best, max(s.value) AS best_reward,
       arg_min(r.text, s.value) AS worst, min(s.value) AS worst_reward
FROM hardest h
JOIN prompts p ON p.prompt_id = h.prompt_id
JOIN responses r ON r.prompt_id = h.prompt_id
JOIN rounds rd ON rd.round = h.round
JOIN scores s ON s.response_id = r.response_id AND s.scorer = rd.scorer
GROUP BY h.round, h.rank, h.prompt_id, h.mean_reward, h.answers
ORDER BY h.round, h.rank
"""
REPORT_NOVELTY = "SELECT round, avg(diversity) AS novelty FROM attacker_rewards GROUP BY round ORDER BY round"
REPORT_LINEAGE = "SELECT round, role, path, parent, details FROM models ORDER BY round, role"
REPORT_STAGE_DETAILS = """
SELECT round, stage, details FROM stage_log WHERE stage IN ('resample', 'select', 'train_defender') ORDER BY round
"""
