"""The database schema as ordered migrations, applied on open (sqlite-utils Migrations).

Rules: never edit a migration that has shipped; append a new function instead. Each
migration runs in a transaction together with the record that it was applied.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("shapdiff")


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE experiments (
            name TEXT PRIMARY KEY,
            preset TEXT NOT NULL,          -- the validated preset as JSON
            preset_hash TEXT NOT NULL,
            dataset TEXT NOT NULL,         -- dataset key, e.g. imdb:test
            seed INTEGER NOT NULL,
            metrics_n INTEGER NOT NULL,
            explain_n INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE reviews (
            id TEXT PRIMARY KEY,           -- dataset-qualified id, e.g. imdb:test/pos/200_8
            dataset TEXT NOT NULL,
            split TEXT,
            source_id TEXT NOT NULL,
            label INTEGER NOT NULL CHECK (label IN (0, 1)),
            rating INTEGER,
            text TEXT NOT NULL,
            n_chars INTEGER NOT NULL,
            encoding TEXT
        );
        CREATE TABLE samples (
            experiment TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('metrics', 'explain')),
            review_id TEXT NOT NULL REFERENCES reviews(id),
            ordinal INTEGER NOT NULL,
            PRIMARY KEY (experiment, role, review_id)
        );
        CREATE INDEX samples_order ON samples(experiment, role, ordinal);
        CREATE TABLE models (
            id TEXT PRIMARY KEY,           -- hash of content hash + variant
            name TEXT NOT NULL,            -- name it was first stored under
            source TEXT NOT NULL,          -- hub id, local path or zoo:recipe
            kind TEXT NOT NULL,            -- hub | local | zoo
            variant TEXT NOT NULL DEFAULT '',  -- '' | int8 | prune:0.3 ...
            content_hash TEXT NOT NULL,    -- sha256 of the weight files
            positive_index INTEGER NOT NULL,
            label_names TEXT NOT NULL,     -- JSON list
            max_length INTEGER NOT NULL,
            n_params INTEGER,
            card TEXT,                     -- JSON: recipe, accuracy, build time, versions
            created_at TEXT NOT NULL
        );
        CREATE TABLE experiment_models (
            experiment TEXT NOT NULL REFERENCES experiments(name),
            name TEXT NOT NULL,
            model_id TEXT NOT NULL REFERENCES models(id),
            role TEXT NOT NULL CHECK (role IN ('reference', 'compressed')),
            ordinal INTEGER NOT NULL,
            PRIMARY KEY (experiment, name)
        );
        CREATE TABLE predictions (
            model_id TEXT NOT NULL REFERENCES models(id),
            review_id TEXT NOT NULL REFERENCES reviews(id),
            settings_hash TEXT NOT NULL,
            settings TEXT NOT NULL,        -- JSON: max_length, dtype, batching
            logit_neg REAL NOT NULL,
            logit_pos REAL NOT NULL,
            p_pos REAL NOT NULL,
            pred INTEGER NOT NULL,
            n_tokens INTEGER NOT NULL,
            truncated INTEGER NOT NULL,
            device TEXT NOT NULL,
            versions TEXT NOT NULL,
            seconds REAL NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (model_id, review_id, settings_hash)
        );
        CREATE TABLE explanations (
            id INTEGER PRIMARY KEY,
            model_id TEXT NOT NULL REFERENCES models(id),
            review_id TEXT NOT NULL REFERENCES reviews(id),
            settings_hash TEXT NOT NULL,
            settings TEXT NOT NULL,        -- JSON: algorithm, mode, max_evals, masker, mask token, output, max_length, seed, dtype
            output TEXT NOT NULL,          -- logit | log-odds | probability
            base_value REAL NOT NULL,
            fx REAL NOT NULL,
            additivity_error REAL NOT NULL,
            additivity_ok INTEGER NOT NULL,
            max_evals INTEGER NOT NULL,
            evals_used INTEGER,
            n_tokens INTEGER NOT NULL,     -- tokens explained, specials included
            truncated INTEGER NOT NULL,
            warning TEXT,
            device TEXT NOT NULL,
            versions TEXT NOT NULL,
            seconds REAL NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (model_id, review_id, settings_hash)
        );
        CREATE INDEX explanations_review ON explanations(review_id);
        CREATE TABLE attributions (
            explanation_id INTEGER NOT NULL REFERENCES explanations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            token TEXT NOT NULL,
            start INTEGER NOT NULL,        -- character offsets in the review text
            end INTEGER NOT NULL,
            value REAL NOT NULL,
            special INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (explanation_id, position)
        ) WITHOUT ROWID;
        CREATE INDEX predictions_review ON predictions(review_id);
        """
    )


@migrations()
def m002_faithfulness(db: Database) -> None:
    """ERASER comprehensiveness/sufficiency per explanation (engine.faithfulness)."""
    db.executescript(
        """
        CREATE TABLE faithfulness (
            explanation_id INTEGER NOT NULL REFERENCES explanations(id) ON DELETE CASCADE,
            faith_hash TEXT NOT NULL,      -- hash of the faithfulness settings
            model_id TEXT NOT NULL REFERENCES models(id),
            review_id TEXT NOT NULL REFERENCES reviews(id),
            settings_hash TEXT NOT NULL,   -- the explanation's settings hash
            settings TEXT NOT NULL,        -- JSON: metric, fractions, removal, target
            comprehensiveness REAL NOT NULL,   -- AOPC over the fractions
            sufficiency REAL NOT NULL,
            by_fraction TEXT NOT NULL,     -- JSON list: fraction, k, comprehensiveness, sufficiency
            p_full REAL NOT NULL,          -- probability of the predicted class, full input
            pred INTEGER NOT NULL,
            n_tokens INTEGER NOT NULL,     -- non-special tokens ranked
            unmatched INTEGER NOT NULL,    -- tokens without a stored value (given 0)
            device TEXT NOT NULL,
            versions TEXT NOT NULL,
            seconds REAL NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (explanation_id, faith_hash)
        );
        CREATE INDEX faithfulness_model ON faithfulness(model_id, settings_hash);
        """
    )


@migrations()
def m003_explanation_budget(db: Database) -> None:
    """Per explanation: tokens before truncation, evaluation budget per feature, and whether
    the Partition hierarchy was expanded down to single tokens (engine.explain)."""
    db.executescript(
        """
        ALTER TABLE explanations ADD COLUMN tokens_total INTEGER;      -- tokens before truncation
        ALTER TABLE explanations ADD COLUMN budget_per_token REAL;     -- max_evals / features
        ALTER TABLE explanations ADD COLUMN complete INTEGER;          -- 1: no flat blocks
        """
    )
