"""What every ``launch/`` script shares: the ``sys.path`` guard, the one-line
error, progress lines and their ETA format, the ``launch/`` flagfile lookup,
and flags derived from the config dataclasses.

Import it first (``import _cli``) in a script run as ``python launch/X.py``:
Python puts ``launch/`` on ``sys.path``, so the import works from any working
directory, and importing it removes the repository root from ``sys.path`` so
that ``./datasets`` (our builders, installed as ``emobed_datasets``) never
shadows Hugging Face's ``datasets``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

LAUNCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = LAUNCH_DIR.parent

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]

from absl import app, flags, logging  # noqa: E402  (after the sys.path guard)

from emobed_jax import config as C  # noqa: E402  (creates no JAX backend)


def say(message: str, prefix: str = "") -> None:
  """One progress line on stdout, flushed (the library itself never prints)."""
  print(f"{prefix}{message}", flush=True)


def fail(message: object, code: int = 1) -> None:
  """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
  print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
  sys.exit(code)


def fmt_seconds(seconds: float | None) -> str:
  """``3725.2`` -> ``"1:02:05"``; ``None`` (not known yet) -> ``"?"``."""
  if seconds is None:
    return "?"
  s = int(seconds)
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def resolve_flagfiles(argv: list[str]) -> list[str]:
  """A flagfile named by ``--flagfile=NAME``, ``-flagfile=NAME`` or
  ``--flagfile NAME`` that is not found from the working directory is read
  from ``launch/`` (``demo.flags``, ``recola.flags``)."""
  out: list[str] = []
  i = 0
  while i < len(argv):
    a = argv[i]
    name, joined = None, True
    for form in ("--flagfile=", "-flagfile="):
      if a.startswith(form):
        name = a[len(form):]
    if a in ("--flagfile", "-flagfile") and i + 1 < len(argv):
      name, joined = argv[i + 1], False
    if name is not None:
      if not Path(name).exists():
        if not (LAUNCH_DIR / name).exists():
          fail(f"--flagfile={name}: not found in the working directory or in "
               f"{LAUNCH_DIR}", 2)
        name = str(LAUNCH_DIR / name)
      out.append(f"--flagfile={name}")
      i += 1 if joined else 2
      continue
    out.append(a)
    i += 1
  return out


def resolve_argv(argv: list[str]) -> list[str]:
  """:func:`resolve_flagfiles`, with every flagfile moved before the other
  arguments: a flag given on the command line wins over a flagfile's value
  whatever the order (``--modality=video --flagfile=demo.flags`` runs
  video), and of two flagfiles setting one flag, the later one wins."""
  argv = resolve_flagfiles(argv)
  files = [a for a in argv[1:] if a.startswith("--flagfile=")]
  rest = [a for a in argv[1:] if not a.startswith("--flagfile=")]
  return argv[:1] + files + rest


# --- flags derived from the config dataclasses (emobed_jax.config.option) ---

#: Help sections, in the order ``--help`` prints them (config dataclass name
#: -> title).
SECTION_TITLES = {
    "DataConfig": "Data",
    "TaskConfig": "Setting and losses",
    "LossConfig": "Setting and losses",
    "ModelConfig": "Model",
    "OptimConfig": "Optimiser",
    "RunConfig": "Training loop",
}


def define_config_flags(config_cls: type, flag_values=flags.FLAGS) -> list[Any]:
  """Define one absl flag per :func:`emobed_jax.config.option` field of
  ``config_cls`` (name, type, default, help and choices from the field).

  Returns the :class:`emobed_jax.config.Option` list (flag fields only).
  """
  out = []
  for o in C.options(config_cls):
    if not o.is_flag:
      continue
    d, h, kw = o.field.default, o.help, dict(flag_values=flag_values)
    if o.type is bool:
      flags.DEFINE_bool(o.name, d, h, **kw)
    elif o.type is int:
      flags.DEFINE_integer(o.name, d, h, **kw)
    elif o.type is float:
      flags.DEFINE_float(o.name, d, h, **kw)
    elif o.type is str and o.choices:
      flags.DEFINE_enum(o.name, d, list(o.choices), h, **kw)
    elif o.type is str:
      flags.DEFINE_string(o.name, d, h, **kw)
    elif getattr(o.type, "__origin__", None) is tuple:
      flags.DEFINE_list(o.name, list(d), h, **kw)
    else:
      raise TypeError(f"{'.'.join(o.path)}: no flag type for {o.type!r}")
    out.append(o)
  return out


def config_from_flags(config_cls: type, flag_values=flags.FLAGS) -> Any:
  """The (unvalidated) config ``config_cls`` from the parsed flags."""
  return C.from_flat({o.name: flag_values[o.name].value
                      for o in C.options(config_cls) if o.is_flag}, config_cls)


HELP_ARGS = ("--help", "-help", "-h", "--helpshort", "--helpfull", "-?")


def _flag_line(name: str, default: Any, help_: str, choices: Sequence[str] | None) -> str:
  if isinstance(default, (list, tuple)):
    default = ",".join(default)
  elif isinstance(default, bool):
    default = str(default).lower()
  head = f"  --{name}={default}"
  alt = f" [{'|'.join(choices)}]" if choices else ""
  return f"{head:<34} {help_}{alt}"


def print_help(usage: str, config_cls: type,
               extra: Sequence[tuple[str, str]] = (), flag_values=flags.FLAGS) -> None:
  """``--help``: ``usage``, then the config flags grouped by section, then
  the ``extra`` groups ``(title, flag names)`` (e.g. launcher-only flags)."""
  by_section: dict[str, list[str]] = {}
  for o in C.options(config_cls):
    if o.is_flag:
      title = SECTION_TITLES.get(o.section.__name__, o.section.__name__)
      by_section.setdefault(title, []).append(
          _flag_line(o.name, o.field.default, o.help, o.choices))
  print(usage.strip() + "\n")
  for title in dict.fromkeys(list(SECTION_TITLES.values()) + list(by_section)):
    if title in by_section:
      print(f"{title}:")
      print("\n".join(by_section[title]) + "\n")
  for title, names in extra:
    print(f"{title}:")
    for n in names:
      f = flag_values[n]
      print(_flag_line(n, f.default, f.help, getattr(f.parser, "enum_values", None)))
    print()


def parse_argv(argv: list[str], usage: str, config_cls: type,
               extra: Sequence[tuple[str, str]] = (), flag_values=flags.FLAGS) -> list[str]:
  """Parse ``argv`` (``sys.argv`` form) into ``flag_values``; returns the
  arguments left over.  ``--help`` prints grouped help and exits 0;
  flagfiles are found in ``launch/`` and never override command-line flags
  (:func:`resolve_argv`); a flag error is one ``error:`` line, exit 2."""
  argv = resolve_argv(argv)
  if any(a in HELP_ARGS for a in argv[1:]):
    print_help(usage, config_cls, extra, flag_values)
    sys.exit(0)
  return parse_flags(argv, flag_values)


def parse_flags(argv: list[str], flag_values=flags.FLAGS) -> list[str]:
  """Parse ``argv`` into ``flag_values`` (e.g. a :func:`script_flags` set):
  flagfiles found in ``launch/`` too; ``--help`` prints the flags and exits
  0; a flag error is one ``error:`` line, exit 2.  Returns the arguments
  left."""
  argv = resolve_flagfiles(argv)
  if any(a in HELP_ARGS for a in argv[1:]):
    import __main__  # noqa: PLC0415  (the script's own docstring, at help time only)
    print((getattr(__main__, "__doc__", None) or "").strip() + "\n")
    print(flag_values.get_help(include_special_flags=False))
    sys.exit(0)
  try:
    rest = flag_values(argv)
  except flags.Error as e:
    fail(f"{e} (see --help)", 2)
  if flag_values is not flags.FLAGS:
    flags.FLAGS.mark_as_parsed()  # absl.app checks the global ones
  return rest


def script_flags() -> flags.FlagValues:
  """A script's own flag set: its flags cannot clash with another script's
  imported into the same process (tests), and absl's ``--verbosity``/``-v``
  still works."""
  fv = flags.FlagValues()
  flags.DEFINE_flag(flags.FLAGS["verbosity"], flag_values=fv)
  return fv


def start(argv: list[str], flag_values=flags.FLAGS) -> None:
  """The first lines of every script's ``main``: leftover arguments are a
  one-line error (exit 2); absl logging is quiet unless ``--verbosity`` is
  given (the script's own lines report progress)."""
  if len(argv) > 1:
    fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags are written --name=value)", 2)
  if not flag_values["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def run_script(main, flag_values) -> None:
  """``absl.app.run(main)`` for a script with its own :func:`script_flags`
  set, parsed by :func:`parse_flags` (help, one-line errors)."""
  app.run(main, argv=sys.argv, flags_parser=lambda argv: parse_flags(argv, flag_values))


def run(main, usage: str, config_cls: type, extra: Sequence[tuple[str, str]] = (),
        flag_values=flags.FLAGS) -> None:
  """``absl.app.run(main)`` with :func:`parse_argv` as the flag parser."""

  app.run(main, argv=sys.argv, flags_parser=lambda argv: parse_argv(
      argv, usage, config_cls, extra, flag_values))
