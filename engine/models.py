"""Load any binary sentiment classifier (hub id or local folder) and know which output is positive.

Hub ids are resolved to a local snapshot folder first (the local cache when offline), so
every model is loaded the same way: from a folder, safetensors preferred, never with
remote code unless the preset names it, never by unpickling unless the preset allows it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DTYPES = ("fp32", "bf16")

_POS = {"positive", "pos", "1", "label_1", "true", "good", "yes"}
_NEG = {"negative", "neg", "0", "label_0", "false", "bad", "no"}


def resolve_positive_index(label_names: list[str], positive_label: str | int | None = None) -> int:
    """Which output index means "positive".

    ``label_names`` are the model's id2label values in index order. An explicit
    ``positive_label`` (a name or an index) wins; otherwise the usual schemes are
    recognised: POSITIVE/NEGATIVE, pos/neg, LABEL_0/LABEL_1 (LABEL_1 positive), 0/1.
    """
    n = len(label_names)
    if positive_label is not None:
        if isinstance(positive_label, int) or str(positive_label).isdigit() and str(positive_label) not in label_names:
            idx = int(positive_label)
            if 0 <= idx < n:
                return idx
            raise BadInput(f"positive_label index {idx} is out of range for a model with {n} outputs",
                           f"use 0..{n - 1} or one of the label names {label_names}")
        lowered = [str(x).lower() for x in label_names]
        if str(positive_label).lower() in lowered:
            return lowered.index(str(positive_label).lower())
        raise BadInput(f"positive_label {positive_label!r} is not one of the model's labels {label_names}",
                       "set positive_label in the preset to one of those names or to an index")
    if n != 2:
        raise BadInput(
            f"the model has {n} outputs ({label_names}); shapdiff explains binary sentiment classifiers",
            "use a 2-label sentiment model, or name the positive output with positive_label in the preset",
        )
    norm = [re.sub(r"[\s\-]+", "_", str(x).strip().lower()) for x in label_names]
    for i, name in enumerate(norm):
        other = norm[1 - i]
        if name in _POS and other in _NEG:
            return i
    raise BadInput(
        f"cannot tell which output is positive from the labels {label_names}",
        "these do not look like sentiment labels; if the model is a sentiment classifier, "
        "set positive_label (name or index) for it in the preset",
    )


def content_hash(folder: str | Path) -> str:
    """sha256 over the model's config and weight files (names and bytes)."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = [folder / "config.json"] + sorted(
        p for p in folder.iterdir() if p.name in WEIGHT_FILES or p.suffix == ".safetensors")
    for p in files:
        if not p.is_file():
            continue
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_id(content_sha: str, variant: str = "") -> str:
    """The stored model id: a short hash of the content hash and the variant spec."""
    return hashlib.sha256(f"{content_sha}|{variant}".encode()).hexdigest()[:16]


def resolve_source(source: str, *, allow_download: bool | None = None) -> tuple[Path, str]:
    """A hub id or local path -> (local folder, kind 'local' | 'hub').

    Hub ids come from the local Hugging Face cache; when not cached, they are downloaded
    unless offline (HF_HUB_OFFLINE=1 or allow_download False), with a clear error.
    """
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        if not path.is_dir():
            raise BadInput(f"model folder {source} does not exist",
                           "point the preset's source at a folder with config.json and weights")
        if not (path / "config.json").is_file():
            raise BadInput(f"{source} is not a transformers model folder (no config.json)",
                           "use a folder written by save_pretrained(), or a hub id")
        return path.resolve(), "local"
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", source):
        raise BadInput(f"{source!r} is neither an existing folder nor a hub model id",
                       "use a local folder path or an id like distilbert-base-uncased-finetuned-sst-2-english")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") if allow_download is None else not allow_download
    patterns = ["*.json", "*.txt", "*.safetensors", "*.model", "pytorch_model.bin"]
    try:
        return Path(snapshot_download(source, allow_patterns=patterns, local_files_only=True)), "hub"
    except Exception:
        if offline:
            raise BadInput(
                f"model {source!r} is not in the local cache and the hub is offline",
                f"download it where the hub is reachable (huggingface-cli download {source} "
                f"--local-dir DIR), copy DIR here and set the model's source to that folder",
            ) from None
    try:
        return Path(snapshot_download(source, allow_patterns=patterns)), "hub"
    except Exception as exc:
        raise BadInput(
            f"cannot fetch model {source!r} from the hub: the hub is unreachable or the id is unknown "
            f"({type(exc).__name__})",
            f"check the id; offline, download it elsewhere (huggingface-cli download {source} "
            f"--local-dir DIR) and set the model's source to that local folder",
        ) from None


def pick_device(device: str | None = None) -> str:
    """'cuda' when present, else 'cpu' (or what the caller asked for)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel:
    """A classifier ready for inference, with what identifies it."""

    name: str
    source: str
    kind: str                      # hub | local | zoo
    folder: Path
    model: Any                     # transformers PreTrainedModel (or a quantized copy)
    tokenizer: Any
    positive_index: int
    label_names: list[str]
    max_length: int
    device: str
    dtype: str
    content_hash: str
    variant: str = ""
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return model_id(self.content_hash, self.variant)

    @property
    def batch_invariant(self) -> bool:
        """Is a row's output independent of the other rows in its batch? Dynamic int8
        quantization scales activations by the whole batch's range, so an int8 model's
        logits for one input would depend on what it was batched with (an explanation's
        f(x) would not add up); such models run one row at a time."""
        return "int8" not in (self.variant or "").split("+")

    def rows_per_call(self, wanted: int) -> int:
        """``wanted`` rows per forward call, or 1 for a model that is not batch-invariant."""
        return max(1, int(wanted)) if self.batch_invariant else 1

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def store_row(self) -> dict[str, Any]:
        """The models-table row that records this model's identity."""
        return {
            "id": self.id, "name": self.name, "source": self.source, "kind": self.kind,
            "variant": self.variant, "content_hash": self.content_hash,
            "positive_index": self.positive_index, "label_names": self.label_names,
            "max_length": self.max_length, "n_params": self.n_params, "card": self.card or None,
        }


def torch_dtype(dtype: str) -> "torch.dtype":
    import torch

    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def quiet_transformers() -> None:
    """No download/loading progress bars or advisory warnings on our output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_classifier(
    source: str,
    *,
    name: str | None = None,
    kind: str | None = None,
    device: str | None = None,
    dtype: str = "fp32",
    positive_label: str | int | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    allow_download: bool | None = None,
) -> LoadedModel:
    """Load a binary sentiment classifier from a hub id or a local folder."""
    folder, resolved_kind = resolve_source(source, allow_download=allow_download)
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors:
        if not (folder / "pytorch_model.bin").exists():
            raise BadInput(f"no weights in {folder} (neither model.safetensors nor pytorch_model.bin)",
                           "point the source at a complete model folder")
        if not allow_pickle:
            raise BadInput(
                f"{source} ships only pickled weights (pytorch_model.bin), which can run code when loaded",
                "convert it to safetensors, or set allow_pickle = true for this model in the preset "
                "if you trust it",
            )
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except OSError as exc:  # config.json that is not JSON (a half-copied folder)
        raise BadInput(f"cannot read the model config in {folder}: {exc}",
                       "the folder looks incomplete or damaged; copy or build it again") from None
    except ValueError as exc:
        raise BadInput(f"cannot read the model config in {folder}: {exc}",
                       "if the model needs its own code, set trust_remote_code = true in the preset "
                       "(only for code you trust)") from None
    labels = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    positive_index = resolve_positive_index(labels, positive_label)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    import pickle

    from safetensors import SafetensorError

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, trust_remote_code=trust_remote_code, use_safetensors=has_safetensors,
            dtype=torch_dtype(dtype),
        )
    except (SafetensorError, pickle.UnpicklingError, EOFError, OSError) as exc:
        # truncated or damaged weights; or a pickle that torch's weights_only loader refuses
        # because it would run code (even with allow_pickle, only plain tensors are unpickled)
        raise BadInput(f"cannot load the weights in {folder}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                       "the weight files look incomplete, damaged or unsafe; copy or build the model again "
                       "(safetensors preferred)") from None
    dev = pick_device(device)
    model.to(dev).eval()
    limit = getattr(config, "max_position_embeddings", 512) or 512
    tok_max = getattr(tokenizer, "model_max_length", limit) or limit
    if tok_max > 100_000:  # tokenizers without a limit report a huge sentinel
        tok_max = limit
    ml = min(limit, tok_max, max_length or limit)
    return LoadedModel(
        name=name or folder.name, source=source, kind=kind or resolved_kind, folder=folder,
        model=model, tokenizer=tokenizer, positive_index=positive_index, label_names=labels,
        max_length=int(ml), device=dev, dtype=dtype, content_hash=content_hash(folder),
    )
