"""Experiment presets (TOML): schema, validation with named errors, and lookup by name."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import BadInput
from engine.provenance import canonical_json, settings_hash
from engine.workspace import PROJECT_ROOT

PRESETS_DIR = PROJECT_ROOT / "data" / "presets"
DEFAULT_PRESET = "offline"

DATASETS = ("imdb", "imdb-folder", "csv", "sst2", "glue-sst2", "rt-polarity", "hf")


NAME_PATTERN = r"^[\w.\-]+$"   # letters, digits, '_', '.', '-'; and not only dots (see _name)


def _name(v: str) -> str:
    """Names end up in file and folder names (exports): '.' or '..' would climb out."""
    if set(v) == {"."}:
        raise ValueError(f"name {v!r} must hold a letter or digit")
    return v


class _Strict(BaseModel):
    # strict: TOML values are typed, so a string where a number or a boolean belongs is an error
    # (lax parsing would read trust_remote_code = "yes" as true)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataSpec(_Strict):
    dataset: Literal["imdb", "imdb-folder", "csv", "sst2", "glue-sst2", "rt-polarity", "hf"] = "imdb"
    split: str = "test"
    path: str | None = None          # file or folder; relative to the data path
    text_column: str = "text"        # csv
    label_column: str = "label"      # csv
    hf_name: str = "imdb"            # hf: dataset id on the hub

    @field_validator("path")
    @classmethod
    def _inside(cls, v: str | None) -> str | None:
        if v is not None and (Path(v).is_absolute() or ".." in Path(v).parts or v.startswith("~")):
            raise ValueError(f"path {v!r} must be relative to the data folder and stay inside it;"
                             " point --data-path (or SHAPDIFF_DATA) at the folder that holds the file")
        return v


class SampleSpec(_Strict):
    metrics_n: int = Field(1001, ge=2)
    explain_n: int = Field(10, ge=0)
    seed: int = 42

    @model_validator(mode="after")
    def _subset(self) -> "SampleSpec":
        if self.explain_n > self.metrics_n:
            raise ValueError(f"explain_n ({self.explain_n}) must not exceed metrics_n ({self.metrics_n}):"
                             " the explain sample is a subset of the metrics sample")
        return self


class ModelSpec(_Strict):
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    source: str = Field(min_length=1)         # hub id, local folder, or zoo:RECIPE
    role: Literal["reference", "compressed"] = "compressed"
    variant: str = ""                         # '' | int8 | prune:0.3
    positive_label: str | int | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False

    _name_ok = field_validator("name")(classmethod(lambda cls, v: _name(v)))

    @field_validator("variant")
    @classmethod
    def _variant(cls, v: str) -> str:
        from engine.compress import parse_variant   # the one definition of a variant spec

        try:
            parse_variant(v)
        except BadInput as exc:
            raise ValueError(f"{exc.message} (use '', 'int8', 'prune:0.3' or steps joined by '+')") from None
        return v


class PredictSpec(_Strict):
    max_length: int = Field(256, ge=8, le=8192)
    # how a longer review is cut (engine.truncation); explanations cut the same way
    truncation: Literal["head", "head+tail"] = "head"
    batch_size: int = Field(16, ge=1, le=1024)
    dtype: Literal["fp32", "bf16"] = "fp32"
    device: str | None = None


class ExplainSpec(_Strict):
    mode: Literal["fast", "full"] = "fast"
    max_evals: int = Field(500, ge=10)
    output: Literal["logit", "log-odds", "probability"] = "logit"
    seed: int = 0
    batch_size: int = Field(64, ge=1, le=4096)
    dtype: Literal["fp32", "bf16"] = "fp32"
    max_length: int | None = Field(None, ge=8, le=8192)   # default: the predict max_length
    device: str | None = None
    # The noise floor: the reference is explained again with this seed and budget, and its
    # agreement with itself is the floor a difference between two models must exceed.
    # shap's Partition explainer is deterministic but for tie-breaking, so the re-run also
    # changes the budget (default 2 x max_evals): the floor measures the explainer's
    # approximation noise at this budget. None: no noise floor.
    noise_seed: int | None = 1
    noise_max_evals: int | None = Field(None, ge=10)

    def noise_spec(self) -> "ExplainSpec | None":
        """The settings of the noise-floor re-explanation (None when switched off)."""
        if self.noise_seed is None:
            return None
        return self.model_copy(update={"seed": self.noise_seed,
                                       "max_evals": self.noise_max_evals or 2 * self.max_evals})


class Preset(_Strict):
    name: str = Field(min_length=1, pattern=NAME_PATTERN)
    description: str = ""
    data: DataSpec = DataSpec()
    sample: SampleSpec = SampleSpec()
    models: list[ModelSpec] = Field(min_length=1)
    predict: PredictSpec = PredictSpec()
    explain: ExplainSpec = ExplainSpec()

    _name_ok = field_validator("name")(classmethod(lambda cls, v: _name(v)))

    @model_validator(mode="after")
    def _models(self) -> "Preset":
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        refs = [m.name for m in self.models if m.role == "reference"]
        if len(refs) != 1:
            raise ValueError(f"exactly one model must have role = \"reference\" (found {len(refs)})")
        return self

    @property
    def reference(self) -> ModelSpec:
        return next(m for m in self.models if m.role == "reference")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        return settings_hash(self.to_dict())


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: missing field")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"].endswith("_type") or err["type"] in ("literal_error", "string_pattern_mismatch"):
                got = repr(err.get("input"))
                msg += f" (got {got[:60] + '...' if len(got) > 60 else got})"
            lines.append(f"  {loc}: {msg}")
    return f"invalid preset {source}:\n" + "\n".join(lines)


def parse_preset(data: dict, source: str = "<preset>") -> Preset:
    """Validate a preset dict; unknown keys and missing fields are named in the error."""
    try:
        return Preset.model_validate(data)
    except ValidationError as exc:
        raise BadInput(_format_errors(source, exc), "fix the preset file (see data/presets/ for examples)") from None


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name_or_path: str | Path | None = None) -> Preset:
    """Load a preset by name (data/presets/NAME.toml) or from a TOML file path."""
    ref = str(name_or_path or DEFAULT_PRESET)
    path = Path(ref)
    if not (ref.endswith(".toml") or path.exists()):
        path = PRESETS_DIR / f"{ref}.toml"
        if not path.exists():
            raise BadInput(f"no preset named {ref!r}",
                           f"use one of {', '.join(available_presets())} or a path to a .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"preset file {path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read preset {path}: {exc}", "check the file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"preset {path} is not valid TOML: {exc}", "fix the TOML syntax") from None
    return parse_preset(data, str(path))


def preset_json(preset: Preset) -> str:
    return canonical_json(preset.to_dict())
