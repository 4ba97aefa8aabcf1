"""A run's config checked before threestudio loads any model: one line naming the field the user set.

:func:`check` runs in ``run_threestudio.py`` after the overrides are final and before launch.py, in order:

1. threestudio's own parsing, without creating the trial folder: unknown top-level keys (with the closest
   valid key), values left missing (``???``) and interpolations that do not resolve;
2. every component's fields: the data module, the system and each ``system.<x>_type`` / ``system.<x>``
   pair (geometry, material, background, renderer, prompt processor, guidance, ...): an unknown type or key
   is named with the closest registered type or field, a value of the wrong type with its field;
3. the values, through the ``check_config(cfg)`` class method of our data module, systems and guidance (the
   same checks their ``configure`` runs), data first, then the system, then the guidance, so a mistake is
   reported at the field the user set (``system.warmup_steps``, not a field interpolated from it);
4. what threestudio would find late: a swapped-in guidance's pixel loss without a weight in the host config,
   model folders that do not exist (with the paths tried), an output
   folder that cannot be written, a trial folder name too long for the file system (shortened, made unique);
5. warnings, one line each: a negative CFG scale (it steers away from the prompt), a prompt longer than the
   text encoder's context (threestudio truncates it), and under ``--smoke`` a prompt with words the
   miniature world model does not know (an error: the run would draw nothing related to it).

Returns extra overrides (a shortened ``tag``); raises ``SystemExit`` with the message otherwise.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from .paths import leaves

NAME_MAX = 255  # bytes of one file name on Linux file systems
TIMESTAMP = len("@20261206-112427")
TAG_KEEP = 96  # characters of a long tag kept in the trial folder's name
MODEL_FIELD = "pretrained_model_name_or_path"
PROMPT_FIELDS = ("system.prompt_processor.prompt", "system.prompt", "data.caption")


def fail(message: str) -> None:
    raise SystemExit(f"[run_threestudio] {message}")


def warn(message: str) -> None:
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"[run_threestudio] warning: {message}", file=sys.stderr, flush=True)


def closest(word: str, choices) -> str:
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


# ------------------------------------------------------------------ 1. threestudio's parsing
def check_tag_fields(cfg: DictConfig) -> None:
    """The fields a config's ``tag`` is made from (``${rmspace:${data.caption},_}``) must be set: an empty one
    would fail inside threestudio's config loading ('NoneType' has no attribute 'replace')."""
    tag = OmegaConf.to_container(cfg, resolve=False).get("tag", "")
    for key in re.findall(r"\$\{rmspace:\$\{([\w.\[\]]+)\}", str(tag)):
        node = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
        if node is None or (isinstance(node, str) and not node.strip()):
            fail(f"{key} is empty: the run needs it (its trial folder is named after it)")


def resolved(cfg: DictConfig) -> DictConfig:
    """``cfg`` resolved as threestudio's ``load_config`` resolves it (its resolvers), top-level keys checked."""
    from threestudio.utils.config import ExperimentConfig

    known = [f.name for f in dataclasses.fields(ExperimentConfig)]
    for key in cfg:
        if key not in known:
            fail(f"{key}: not a top-level key of a threestudio config{closest(key, known)}")
    check_tag_fields(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        fail(f"{missing[0]} has no value (??? in the config): set it, e.g. {missing[0]}=...")
    out = cfg.copy()
    try:
        OmegaConf.resolve(out)
    except MissingMandatoryValue as exc:
        fail(f"{exc.full_key} has no value (??? in the config): set it, e.g. {exc.full_key}=...")
    except InterpolationResolutionError as exc:
        fail(f"{exc.full_key}: {str(exc).splitlines()[0]}")
    return out


# ------------------------------------------------------------------ 2. components
def components(cfg: DictConfig) -> Iterator[Tuple[str, str, DictConfig]]:
    """(dotted path, registered type, config node) of the data module, the system and the system's parts."""
    yield "data", cfg.get("data_type", ""), cfg.get("data") or OmegaConf.create({})
    system = cfg.get("system") or OmegaConf.create({})
    yield "system", cfg.get("system_type", ""), system
    for key in list(system.keys()):
        part = str(key)[: -len("_type")]
        if str(key).endswith("_type") and OmegaConf.is_dict(system.get(part)) and system.get(key):
            yield f"system.{part}", system[key], system[part]


def config_class(cls) -> Optional[type]:
    """The dataclass a threestudio module parses its config into: ``cls.Config``, or for a data module the one
    ``*DataModuleConfig`` dataclass of its file."""
    if dataclasses.is_dataclass(getattr(cls, "Config", None)):
        return cls.Config
    module = sys.modules.get(cls.__module__)
    found = [v for k, v in vars(module).items() if k.endswith("DataModuleConfig") and dataclasses.is_dataclass(v)] if module else []
    return found[0] if len(found) == 1 else None


def parse_component(where: str, type_key: str, type_name: str, node: DictConfig):
    """(class, parsed config) of one component; an unknown type, key or mistyped value fails naming it."""
    import threestudio
    from threestudio.utils.config import parse_structured

    try:
        cls = threestudio.find(type_name)
    except KeyError:
        fail(f"{type_key}={type_name!r} is not a registered threestudio module{closest(type_name, threestudio.__modules__)}")
    schema = config_class(cls)
    if schema is None:
        return cls, None
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        if key not in fields:
            fail(f"{where}.{key}: {type_name} has no field {key!r}{closest(key, fields)}")
    try:
        return cls, parse_structured(schema, node)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or getattr(exc, "key", "")
        fail(f"{where}.{key}={getattr(exc, 'value', '?')!r}: {str(exc).splitlines()[0]}")
    except (TypeError, ValueError) as exc:
        fail(f"{where}: {exc}")


# ------------------------------------------------------------------ 4. files and folders
def system_leaves(cfg: DictConfig) -> Iterator[Tuple[str, str, object]]:
    """(dotted key, field name, value) of every leaf under ``system`` (``paths.leaves``)."""
    tree = OmegaConf.to_container(cfg.get("system") or OmegaConf.create({}), resolve=False)
    for dotted, name, _, value in leaves(tree, "system"):
        yield dotted, name, value


def is_local_path(value: str) -> bool:
    """A model given as a folder (absolute, ``~``, ``./`` or ``../``): a model id never starts so."""
    return value.startswith(("/", "~", "./", "../", ".\\"))


def check_model_folders(cfg: DictConfig) -> None:
    for key, name, value in system_leaves(cfg):
        if name == MODEL_FIELD and isinstance(value, str) and is_local_path(value):
            path = Path(value).expanduser()
            tried = path if path.is_absolute() else Path.cwd() / path
            if not tried.is_dir():
                fail(f"{key}={value!r}: no such model folder (tried {tried.resolve()}); give a diffusers model folder "
                     "or a model id such as stabilityai/stable-diffusion-2-1-base")
            if not (tried / "model_index.json").is_file() and not (tried / "config.json").is_file():
                fail(f"{key}={value!r}: {tried.resolve()} is a folder but not a diffusers model (no model_index.json)")


def check_output_folder(cfg: DictConfig) -> None:
    root = Path(str(cfg.get("exp_root_dir", "outputs"))).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        fail(f"exp_root_dir={str(root)!r}: cannot write the run's outputs there ({exc.strerror or exc}); "
             "set exp_root_dir to a writable folder")


def short_tag(cfg: DictConfig) -> List[str]:
    """``tag=<its start>_<hash>`` when the trial folder's name (tag + timestamp) would not fit a file name."""
    tag = str(cfg.get("tag") or "")
    if len(tag.encode()) + TIMESTAMP <= NAME_MAX:
        return []
    short = tag.encode()[:TAG_KEEP].decode(errors="ignore") + "_" + hashlib.sha256(tag.encode()).hexdigest()[:8]
    warn(f"the trial folder's name (tag, made from the prompt) is {len(tag.encode())} bytes, over the file system's "
         f"{NAME_MAX}: the trial folder is named {short}@<date> (set tag=... to choose)")
    return [f"tag={short}"]


# ------------------------------------------------------------------ 5. prompts and scales
def prompts(cfg: DictConfig) -> Iterator[Tuple[str, str]]:
    for key in PROMPT_FIELDS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value.strip():
            yield key, value
    for i, region in enumerate(OmegaConf.select(cfg, "system.regions", default=None) or []):
        if OmegaConf.is_dict(region) and isinstance(region.get("prompt"), str):
            yield f"system.regions[{i}].prompt", region["prompt"]


def check_world_words(cfg: DictConfig) -> None:
    """Under ``--smoke``: every word of every prompt is one the miniature world model was trained on."""
    from dreamsampler.world.captions import WORDS

    for key, text in prompts(cfg):
        unknown = [w for w in re.findall(r"[a-z]+", text.lower()) if w not in WORDS]
        if unknown:
            fail(f"{key}={text!r}: the miniature world model (--smoke) does not know {', '.join(map(repr, unknown))}; "
                 f"it knows: {' '.join(WORDS)} (or use --smoke-tiny, or your own model on a GPU)")


def check_scales_and_context(cfg: DictConfig) -> None:
    for key, name, value in system_leaves(cfg):  # not inversion_guidance_scale: SDI's is negative by design
        if name == "guidance_scale" and isinstance(value, (int, float)) and value < 0:
            warn(f"{key}={value} is negative: the guidance then steers away from the prompt")
    model = OmegaConf.select(cfg, f"system.prompt_processor.{MODEL_FIELD}", default=None)
    prompt = OmegaConf.select(cfg, "system.prompt_processor.prompt", default=None)
    if not (isinstance(model, str) and isinstance(prompt, str)):
        return
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer", local_files_only=True)
    except (OSError, ValueError):  # not on this machine yet (a model id to download): threestudio reports it
        return
    n = len(tokenizer(prompt, verbose=False).input_ids)
    if n > tokenizer.model_max_length:
        warn(f"system.prompt_processor.prompt is {n} tokens, longer than the text encoder's context of "
             f"{tokenizer.model_max_length}: threestudio's prompt processor keeps the first {tokenizer.model_max_length}")


def check_swap(cfg: DictConfig) -> None:
    """A swapped-in ``dreamsampler-guidance`` with ``pixel_loss`` returns ``loss_pixel``, which threestudio's systems
    weigh by ``system.loss.lambda_pixel``: a config without it would fail at the first step."""
    system = cfg.get("system") or {}
    if system.get("guidance_type") != "dreamsampler-guidance" or not (system.get("guidance") or {}).get("pixel_loss"):
        return
    loss = system.get("loss")
    if OmegaConf.is_dict(loss) and "lambda_pixel" not in loss:
        fail("system.guidance.pixel_loss=true returns loss_pixel, but system.loss has no lambda_pixel to weigh it: set "
             "system.loss.lambda_pixel (e.g. 3932, HiFA's 0.01 on a 0.5-sum over 512x512 pixels) or pixel_loss=false")


def check_values(where: str, cls, parsed) -> None:
    """``cls.check_config(parsed)`` (our components); a ValueError is reported at the component's path."""
    check = getattr(cls, "check_config", None)
    if check is None or parsed is None:
        return
    try:
        check(parsed)
    except ValueError as exc:
        head = where.rsplit(".", 1)[-1]
        if head != where:  # "guidance.x" -> "system.guidance.x"
            fail(re.sub(rf"(?<![\w.]){re.escape(head)}\.", where + ".", str(exc)))
        fail(str(exc))


def check(raw: DictConfig, smoke: Optional[str] = None) -> List[str]:
    """Check the run's config ``raw`` (the file with the final overrides, unresolved; threestudio and this extension
    imported); ``smoke``: ``world`` under ``--smoke``. Returns extra overrides."""
    cfg = resolved(raw)
    parsed = [(where, *parse_component(where, f"{where}_type", t, node)) for where, t, node in components(cfg)]
    _, system_cls, system_cfg = parsed[1]
    loads = getattr(system_cls, "loads_guidance", None)  # a warm-up covering the run loads no diffusion model
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    used = loads is None or system_cfg is None or max_steps is None or loads(system_cfg, max_steps)
    skip = () if used else ("system.guidance", "system.prompt_processor")
    for where, cls, parsed_cfg in parsed:
        if where not in skip:
            check_values(where, cls, parsed_cfg)
    check_swap(cfg)
    check_model_folders(cfg)
    if smoke == "world":
        check_world_words(cfg)
    check_scales_and_context(cfg)
    check_output_folder(cfg)
    return short_tag(cfg)
