"""``reed-protein``: design sequences for protein backbones (inverse folding), train and evaluate models."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

from reed_core.cli import add_threads_argument
from reed_core.io import atomic_write, output_path

from .constants import ALPHABET, CROPS, MPNN_NOISE_LEVELS, PAIRS_PER_TOKEN

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")


def _inputs(arg: str) -> list:
    """The structures an input names: a structure file, a directory of them (as paths, parsed one at a time), or
    ProteinMPNN's parsed structures as JSON Lines (``.jsonl``, its ``--jsonl_path``: each record a Structure, or
    the StructureError of a bad one)."""
    from .structure import read_parsed_jsonl

    p = Path(arg)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(STRUCTURE_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"{p}: no structure files (.pdb/.cif, optionally .gz) in directory")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return read_parsed_jsonl(p) if p.name.lower().endswith((".jsonl", ".jsonl.gz")) else [p]


def _each_structure(items: list, fn, desc: str, quiet: bool) -> tuple[list, list[str]]:
    """``(item, key, fn(structure))`` for every input structure that works (``_inputs``' items: files are parsed
    here), and the errors of those that do not. With one input its error is raised (one line, exit 2); among
    several it is collected so the good ones still count. ``key``: a file's stem or a parsed record's name, or,
    when another input shares it, the whole file name (x.pdb and x.cif) or the name numbered by its record."""
    from tqdm.auto import tqdm

    from .design import DesignError
    from .structure import StructureError, read_structure

    names = [i.name if not isinstance(i, Path) else i.name.split(".")[0] for i in items if not isinstance(i, Exception)]
    done, failed = [], []
    for k, item in enumerate(tqdm(items, desc=desc, disable=len(items) < 2 or quiet), start=1):
        try:
            if isinstance(item, StructureError):
                raise item
            structure = read_structure(item) if isinstance(item, Path) else item
            value = fn(structure)
        except (StructureError, DesignError) as e:
            if len(items) == 1:
                raise
            failed.append(str(e))
            continue
        key = structure.name
        if names.count(key) > 1:
            key = item.name if isinstance(item, Path) else f"{key}#{k}"
        done.append((item, key, value))
    return done, failed


def _report_failures(failed: list[str], total: int, detail: str = "") -> int:
    """Each failure on its own error line and a summary; the exit code (1 when any failed)."""
    for msg in failed:
        print(f"reed-protein: error: {msg}", file=sys.stderr)
    if failed:
        print(f"reed-protein: {len(failed)} of {total} structures failed{detail}", file=sys.stderr)
    return 1 if failed else 0


def _chain_list(arg: str | None) -> list[str] | None:
    return [c.strip() for c in arg.split(",") if c.strip()] if arg else None


def _names_a_file(arg: str | None) -> bool:
    """Whether an option that takes either a short spec (``A,B``, ``A1-10``) or a ProteinMPNN JSON file was given
    the file (an existing path, or a name ending in .json / .jsonl: a missing one is then an error, not a spec)."""
    return bool(arg) and (Path(arg).is_file() or arg.lower().endswith((".json", ".jsonl")))


def _for_structure(spec, is_entry=lambda v: isinstance(v, dict)):
    """A ProteinMPNN JSON option as a function of a structure's name: ``spec[name]`` (None for names it lacks)
    when ``spec`` is keyed by structure name (every value ``is_entry``), else the whole ``spec`` (a string spec,
    or one entry for every structure)."""
    if isinstance(spec, dict) and spec and all(is_entry(v) for v in spec.values()):
        return spec.get
    return lambda name: spec


def _chains_option(arg: str | None):
    """``--chains``: ``A,B`` for every structure, or ProteinMPNN's chain-id JSON ``{name: [[designed chains],
    [fixed chains]]}`` (its ``--chain_id_jsonl``): a function of the structure's name giving the chains to design
    (None: all; a structure the JSON does not name designs all its chains, as in ProteinMPNN)."""
    if not _names_a_file(arg):
        chains = _chain_list(arg)
        return lambda name: chains
    spec = _json_option(arg, "chain-id", dict, "{name: [[designed chains], [fixed chains]]}")
    for name, entry in spec.items():
        ok = (isinstance(entry, list) and len(entry) in (1, 2) and all(isinstance(part, list) for part in entry)
              and all(isinstance(c, str) for part in entry for c in part))
        if not ok:
            raise ValueError(f"{arg}: {name!r}: expected [[designed chains], [fixed chains]], got {entry!r}")
    return lambda name: list(spec[name][0]) if name in spec else None


def _checkpoint(arg: str | None) -> Path:
    from reed_core.cli import resolve_checkpoint

    from .loading import default_checkpoint

    return resolve_checkpoint(arg, default_checkpoint)


def _write_npz(path: str, per_structure: dict, alphabet: bool = True) -> None:
    """``per_structure`` (``{"<key>__<part>": array}``) as one compressed .npz, written atomically, with the
    alphabet its indices and columns refer to unless ``alphabet`` is False."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **({"alphabet": np.asarray(list(ALPHABET))} if alphabet else {}), **per_structure)
    atomic_write(path, buf.getvalue())


def _design(args: argparse.Namespace) -> int:
    import numpy as np

    from reed_core.cli import apply_threads

    from .design import (
        PSSM_KEYS,
        check_sampling_options,
        design,
        parse_bias,
        parse_omit,
        parse_temperatures,
        to_fasta,
    )
    from .loading import load_model

    temperatures = parse_temperatures(args.temperature)
    check_sampling_options(pssm_multi=args.pssm_multi, pssm_threshold=args.pssm_threshold,
                           backbone_noise=args.backbone_noise)
    for target in (args.out, args.probs, args.save_probs, args.save_score):
        if target:
            output_path(target)
    apply_threads(args.threads)
    files = _inputs(args.input)
    omit, bias = parse_omit(args.omit_aa), parse_bias(args.bias_aa)
    ckpt = _checkpoint(args.checkpoint)
    model = load_model(ckpt, device=args.device)
    chains = _chains_option(args.chains)
    fixed = args.fixed_positions
    if _names_a_file(fixed):
        fixed = _json_option(fixed, "fixed-positions", dict,
                             "{name: {chain: [1-based positions]}} or {chain: [1-based positions]}")
    fixed = _for_structure(fixed)
    tied = _json_option(args.tied_positions, "tied-positions", (dict, list),
                        "{name: [{chain: [positions]}]} or a list of {chain: [positions]}")
    per_res = _json_option(args.bias_per_residue, "per-residue bias", dict,
                           "{name: {chain: [[21 biases] per residue]}} or {chain: [[21 biases] per residue]}")
    per_res = _for_structure(per_res)
    omit_res = _json_option(args.omit_aa_per_residue, "per-residue omission", dict,
                            '{name: {chain: [[[positions], "letters"], ...]}} or {chain: [[[positions], "letters"]]}')
    omit_res = _for_structure(omit_res)
    if args.pssm is None and (args.pssm_multi > 0 or args.pssm_threshold is not None):
        raise ValueError("--pssm-multi and --pssm-threshold need a PSSM: --pssm FILE")
    if args.pssm is not None and args.pssm_multi == 0 and args.pssm_threshold is None:
        raise ValueError("--pssm does nothing alone: give --pssm-multi W (mix its probabilities in at weight W * "
                         "pssm_coef) and/or --pssm-threshold T (restrict each residue to the types whose log-odds "
                         "exceed T)")
    pssm = _json_option(args.pssm, "PSSM", dict, '{name: {chain: {"pssm_coef": [...], "pssm_bias": [[21] ...], '
                        '"pssm_log_odds": [[21] ...]}}} or {chain: {...}}')
    pssm = _for_structure(pssm, lambda v: isinstance(v, dict) and not set(v) & set(PSSM_KEYS))

    def one(structure):
        return design(model, structure, chains=chains(structure.name),
                      fixed_positions=fixed(structure.name), num_seqs=args.num_seqs,
                      temperature=temperatures, num_steps=args.steps, omit=omit, bias=bias, seed=args.seed,
                      batch_size=args.batch_size, device=args.device,
                      tied_positions=tied.get(structure.name, []) if isinstance(tied, dict) else tied,
                      homo_oligomer=args.homo_oligomer,
                      bias_per_residue=per_res(structure.name),
                      omit_per_residue=omit_res(structure.name),
                      pssm=pssm(structure.name), pssm_multi=args.pssm_multi,
                      pssm_threshold=args.pssm_threshold, backbone_noise=args.backbone_noise,
                      sample_probs=bool(args.save_probs), order=args.order)

    done, failed = _each_structure(files, one, "designing", args.quiet)
    fasta = [to_fasta(r, seed=args.seed, model_name=ckpt.name) for _, _, r in done]
    if fasta:  # the structures that designed, written whole (never a partial FASTA)
        atomic_write(args.out, "".join(fasta))
        if args.probs:
            probs = {f"{key}__{part}": v for _, key, r in done
                     for part, v in (("probs", r.probs), ("labels", np.asarray(r.labels)))}
            _write_npz(args.probs, probs)
        if args.save_probs:
            per_design = {f"{key}__{part}": v for _, key, r in done for part, v in (
                ("probs", r.sample_probs.astype(np.float32)), ("log_probs", r.sample_log_probs.astype(np.float32)),
                ("S", r.tokens), ("mask", r.sample_probs[0].sum(-1) > 0),
                ("temperatures", np.asarray(r.temperatures, np.float32)), ("labels", np.asarray(r.labels)))}
            _write_npz(args.save_probs, per_design)
        if args.save_score:
            scores = {f"{key}__{part}": np.asarray(v, np.float32) for _, key, r in done for part, v in (
                ("score", r.scores), ("global_score", r.global_scores), ("native_score", r.native_score),
                ("native_global_score", r.native_global_score), ("temperatures", r.temperatures))}
            _write_npz(args.save_score, scores, alphabet=False)
    if failed:
        return _report_failures(failed, len(files), f"; wrote the designs of the other {len(fasta)}"
                                + (f" to {args.out}" if fasta else ""))
    if not args.quiet:
        at = f" ({args.num_seqs} at each of T = {', '.join(map(str, temperatures))})" if len(temperatures) > 1 else ""
        print(f"wrote {args.num_seqs * len(temperatures)} design(s) per structure{at} for {len(files)} structure(s) "
              f"to {args.out}")
    return 0


def _json_option(arg: str | None, what: str, kinds: type | tuple[type, ...], expected: str):
    """A JSON file option (ProteinMPNN's tied positions, per-residue bias...), checked to be one of ``kinds``; a
    JSON Lines file (ProteinMPNN's ``.jsonl``) of several objects is read as their merge."""
    if arg is None:
        return None
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    try:
        text = path.read_text()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:  # ProteinMPNN's .jsonl: one object per line, merged
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) < 2:
                raise
            try:
                parts = [json.loads(line) for line in lines]
            except json.JSONDecodeError:
                raise e from None
            if not all(isinstance(part, dict) for part in parts):
                raise e from None
            value = {k: v for part in parts for k, v in part.items()}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not JSON or JSON Lines ({e})") from None
    if not isinstance(value, kinds):
        raise ValueError(f"{path}: expected {expected}")
    return value


def _score(args: argparse.Namespace) -> int:
    from reed_core.cli import apply_threads

    from .design import parse_fasta, score
    from .loading import load_model

    for target in (args.out, args.conditional_probs):
        if target:
            output_path(target)
    apply_threads(args.threads)
    files = _inputs(args.input)
    sequences = None
    if args.fasta:
        if len(files) > 1:
            raise ValueError("--fasta scores sequences on one structure; give a single structure file")
        fasta = Path(args.fasta)
        if not fasta.is_file():
            raise FileNotFoundError(f"{fasta}: no such FASTA file")
        sequences = parse_fasta(fasta.read_text(errors="replace"), str(fasta))
    chains = _chains_option(args.chains)
    model = load_model(_checkpoint(args.checkpoint), device=args.device)

    def one(structure):
        return score(model, structure, sequences, chains=chains(structure.name), device=args.device,
                     conditional=bool(args.conditional_probs))

    done, failed = _each_structure(files, one, "scoring", True)
    results = {key: [{"sequence": q, "score": sc, "global_score": gs, "labels": list(r.labels),
                      "log_probs": [None if math.isnan(v) else round(float(v), 5) for v in lp]}
                     for q, sc, gs, lp in zip(r.sequences, r.scores, r.global_scores, r.log_probs, strict=True)]
               for _, key, r in done}
    if results and args.out:
        atomic_write(args.out, json.dumps(results, indent=1) + "\n")
    if results and args.conditional_probs:
        import numpy as np

        arrays = {f"{key}__{part}": v for _, key, r in done for part, v in
                  (("log_probs", r.conditional.astype(np.float32)), ("labels", np.asarray(r.labels)),
                   ("sequences", np.asarray(r.sequences)))}
        _write_npz(args.conditional_probs, arrays)
    if results:
        print("structure\tsequence\tscore\tglobal_score")
        for key, rows in results.items():
            for k, row in enumerate(rows):
                print(f"{key}\t{'native' if sequences is None else k + 1}\t{row['score']:.4f}\t{row['global_score']:.4f}")
    return _report_failures(failed, len(files))


def _pack(args: argparse.Namespace) -> int:
    from collections import Counter

    from .data import SPLITS
    from .packing import PackRecord, chain_filter, cluster, dedupe, split_clusters, write_packed

    output_path(args.out)
    files = _inputs(args.input)
    source = args.source or Path(args.input).resolve().name
    done, failed = _each_structure(files, lambda structure: structure, "reading", args.quiet)
    records, dropped = [], Counter()
    for _, key, structure in done:
        for c in structure.chains:
            if why := chain_filter(c.seq, c.coords, args.min_length, args.max_length):
                dropped[why] += 1
            else:
                records.append(PackRecord(f"{key}{c.chain_id}", c.seq, c.coords, source))
    records, dups = dedupe(records)
    if dups:
        dropped["duplicate"] += dups
    detail = "; dropped " + ", ".join(f"{n} ({why})" for why, n in dropped.most_common()) if dropped else ""
    if not records:
        _report_failures(failed, len(files))
        raise ValueError(f"{args.input}: no chain passed the filters{detail}; nothing written")
    labels = cluster([r.seq for r in records], min_identity=args.min_identity)
    split = split_clusters(labels, args.valid_fraction, args.test_fraction, args.seed)
    write_packed(args.out, records, split, labels)
    counts = ", ".join(f"{name} {int((split == code).sum())}" for name, code in SPLITS.items())
    if not args.quiet:
        print(f"packed {len(records)} chains ({labels.max() + 1} clusters; {counts}) from {len(done)} file(s) to "
              f"{args.out}{detail}")
    return _report_failures(failed, len(files), f"; packed the chains of the other {len(done)}")


def _train(args: argparse.Namespace) -> int:
    from reed_core.cli import (
        check_grad_accum,
        check_weight_decay,
        parse_duration,
        report_training,
        start_from,
    )
    from reed_core.objective import PREDICTION

    from .model import PROTEIN_PRESETS
    from .presets import capture_layer, default_cache_dir, teacher_preset

    budget = parse_duration(args.time_budget) if args.time_budget else None
    check_grad_accum(args.grad_accum, args.batch_size)
    if args.pairs_per_token < 0:
        raise ValueError(f"--pairs-per-token must be >= 0 (0: every edge), got {args.pairs_per_token}")
    if args.eval_every < 0 or args.eval_chains < 0 or args.eval_seed < 0:
        raise ValueError(f"--eval-every, --eval-chains and --eval-seed must be >= 0, got {args.eval_every}, "
                         f"{args.eval_chains}, {args.eval_seed}")
    check_weight_decay(args.weight_decay)
    init = _init_model(args)
    model = init[1] if init else PROTEIN_PRESETS[args.preset or "paper"]
    if args.dropout is not None:  # ProteinModelConfig checks the range
        model = replace(model, dropout=args.dropout)
    named = args.dropout is None and not init
    kw = {"model": (args.preset or "paper") if named else model, "steps": args.steps, "batch_size": args.batch_size,
          "max_length": args.max_length, "lr": args.lr, "lr_decay": args.lr_decay,
          "lr_final": args.lr_final, "backbone_noise": args.backbone_noise, "crop": args.crop, "seed": args.seed, "loss_type": args.loss,
          "align_coefficient": args.align_coefficient, "teachers": args.teachers, "distill": args.distill,
          "distill_from": args.distill_from, "mpnn_noise": args.mpnn_noise, "cache_teachers": not args.no_cache_teachers,
          "precision": args.precision, "grad_accum": args.grad_accum, "weight_decay": args.weight_decay,
          "cache_dir": None if args.no_cache_teachers else str(args.cache_dir or default_cache_dir())}
    preset = teacher_preset(args.teachers, not args.no_cache_teachers, args.pairs_per_token or None,
                            distill=args.distill, distill_from=args.distill_from, mpnn_noise=args.mpnn_noise)
    if args.dry_run:
        latents = {s.name: {"layer": s.layer if s.layer == PREDICTION else capture_layer(model, s.layer), "cached": s.cached,
                            "coefficient": s.coefficient, "pairs_per_token": s.pairs_per_token} for s in preset.for_method(args.method)}
        print(json.dumps({"method": args.method, **kw, "model": kw["model"] if named else "from --init" if init else "custom",
                          "init": str(init[0]) if init else None, "model_config": asdict(model),
                          "align_coefficient": preset.align_coefficient if args.align_coefficient is None
                          else args.align_coefficient, "time_budget_s": budget, "eval_every": args.eval_every,
                          "eval_chains": args.eval_chains or "all valid", "eval_seed": args.eval_seed,
                          "latents": latents, "curriculum": asdict(preset.curriculum), "out": args.out}, indent=2))
        return 0
    from .data import ChainSet
    from .presets import protein_trainer, validation

    chains = ChainSet(args.data)
    trainer = protein_trainer(args.method, chains, args.out, device=args.device, preset=preset, **kw)
    if args.eval_every:
        trainer.validation = validation(chains, args.eval_every, limit=args.eval_chains, seed=args.eval_seed,
                                        device=str(trainer.device))
    start_from(trainer, init and init[0])
    trainer.fit(time_budget=budget)
    return report_training(trainer, args.method)


def _init_model(args: argparse.Namespace):
    """(checkpoint, its model config without hybrid latents) for ``--init``, or None."""
    if args.init is None:
        return None

    from reed_core.checkpoint import build_from_config, load_config

    from .loading import DOMAIN
    from .model import ProteinModelConfig

    if args.preset is not None:
        raise ValueError("--preset and --init exclude each other: the model's size comes from the --init checkpoint")
    path = _checkpoint(None if args.init == "shipped" else args.init)
    config = build_from_config(path, ProteinModelConfig, load_config(path, DOMAIN)["model"]["model"])
    if config.latent_dims:
        raise ValueError(f"{path}: a variational-hybrid model (conditioned on {sorted(config.latent_dims)}); "
                         "--init needs a plain denoiser")
    return path, replace(config, latent_dims={})


def _eval(args: argparse.Namespace) -> int:
    from .data import ChainSet
    from .evaluation import evaluate
    from .loading import load_model

    if args.json:
        output_path(args.json)
    chains = ChainSet(args.data)
    model = load_model(_checkpoint(args.checkpoint), device=args.device)
    out = {}
    for split in args.splits.split(","):
        ids = chains.split(split)
        r = evaluate(model, chains, ids, num_steps=args.steps, temperature=args.temperature, seed=args.seed,
                     device=args.device, order=args.order)
        out[split] = r
        print(f"{split:>6}: recovery {r['recovery']:.2f}%  perplexity {r['perplexity']:.2f}  ({r['chains']} chains)")
    if args.json:
        atomic_write(args.json, json.dumps(out, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from reed_core.cli import (
        METHOD_NAMES,
        HelpFormatter,
        add_grad_accum_argument,
        add_lr_schedule_arguments,
        add_precision_argument,
        add_weight_decay_argument,
    )

    from .constants import UNMASK_ORDERS
    from .model import PROTEIN_PRESETS
    from .presets import DISTILL_FROM, TEACHER_SETS

    fmt = HelpFormatter
    p = argparse.ArgumentParser(prog="reed-protein", description=__doc__, formatter_class=fmt)
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("design", help="design sequences for PDB/mmCIF structures", formatter_class=fmt)
    d.add_argument("input", help="a .pdb/.cif file (optionally .gz) or a directory of them")
    d.add_argument("--out", required=True, help="output FASTA (ProteinMPNN header convention)")
    d.add_argument("--chains", default=None,
                   help="chains to design, e.g. A,B (default: all; others stay native), or ProteinMPNN's chain-id "
                        "JSON ({name: [[designed], [fixed]]})")
    d.add_argument("--fixed-positions", default=None,
                   help="residues kept native, author numbering: A1-10,A15,B7A; or ProteinMPNN's fixed-positions "
                        "JSON ({name: {chain: [1-based positions]}}, its numbering)")
    d.add_argument("--num-seqs", type=int, default=8, help="designs per structure")
    d.add_argument("--temperature", default="0.1",
                   help="sampling temperature, or several (0.1,0.2 or \"0.1 0.2\"): --num-seqs designs at each")
    d.add_argument("--steps", type=int, default=10, help="diffusion sampling steps (recovery is flat from 5 to 500 steps)")
    d.add_argument("--order", choices=UNMASK_ORDERS, default="random",
                   help="which masked residues each step unmasks: random, or the most confident draws first")
    d.add_argument("--omit-aa", default="", help="residue types never designed, e.g. CM (X is always omitted)")
    d.add_argument("--bias-aa", default="", help="logit biases, e.g. A:0.5,G:-1")
    d.add_argument("--seed", type=int, default=0, help="sampling seed")
    d.add_argument("--batch-size", type=int, default=8, help="designs sampled together")
    d.add_argument("--probs", default=None, help="also write per-residue probabilities (.npz)")
    d.add_argument("--save-probs", default=None, metavar="NPZ",
                   help="also write, per design, what ProteinMPNN's --save_probs writes: <name>__probs (designs x L x "
                        "21, the distribution each designed residue was drawn from: tempered, biased, omissions and "
                        "PSSM applied; 0 where not designed), <name>__log_probs (designs x L x 21, the score's "
                        "log-probabilities, designed residues masked; NaN rows elsewhere and at native X), "
                        "<name>__S (designs x L, indices into alphabet), <name>__mask (the designed residues), "
                        "<name>__temperatures, <name>__labels")
    d.add_argument("--save-score", default=None, metavar="NPZ",
                   help="also write what ProteinMPNN's --save_score writes, per structure: <name>__score and "
                        "<name>__global_score (one per design, the FASTA headers' numbers: mean negative "
                        "log-likelihood over the designed residues / over every residue), <name>__native_score, "
                        "<name>__native_global_score, <name>__temperatures")
    d.add_argument("--checkpoint", default=None, help="checkpoint or run directory (default: the shipped REED model)")
    d.add_argument("--device", default="cpu", help="cpu / cuda")
    add_threads_argument(d)
    d.add_argument("--quiet", action="store_true", help="no progress or summary output")
    d.add_argument("--tied-positions", default=None,
                   help="ProteinMPNN's tied-positions JSON ({name: [{chain: [1-based positions]}, ...]}): each group "
                        "gets one residue type")
    d.add_argument("--bias-per-residue", default=None,
                   help="ProteinMPNN's per-residue bias JSON ({name: {chain: [[21 logit biases, order "
                        "ACDEFGHIKLMNPQRSTVWYX] per residue]}}), added to --bias-aa")
    d.add_argument("--omit-aa-per-residue", default=None,
                   help="ProteinMPNN's omit-AA JSON ({name: {chain: [[[1-based positions], \"letters\"], ...]}}): "
                        "residue types never designed at those residues, besides --omit-aa")
    d.add_argument("--pssm", default=None, metavar="JSONL",
                   help="ProteinMPNN's PSSM JSON(L) ({name: {chain: {\"pssm_coef\": [per residue], \"pssm_bias\": "
                        "[[21 probabilities] per residue], \"pssm_log_odds\": [[21] per residue]}}}), used with "
                        "--pssm-multi and/or --pssm-threshold")
    d.add_argument("--pssm-multi", type=float, default=0.0, metavar="W",
                   help="mix the PSSM's probabilities into the sampled ones at weight W * pssm_coef, W in [0, 1] "
                        "(0: not at all, 1: the PSSM alone where pssm_coef is 1)")
    d.add_argument("--pssm-threshold", type=float, default=None, metavar="T",
                   help="restrict each residue to the types whose PSSM log-odds exceed this (the others keep 0.1%% "
                        "of their probability, as in ProteinMPNN's --pssm_log_odds_flag)")
    d.add_argument("--backbone-noise", type=float, default=0.0, metavar="SIGMA",
                   help="standard deviation (Å) of Gaussian noise added to the backbone atoms, drawn anew for each "
                        "design (ProteinMPNN's --backbone_noise; more diverse designs)")
    d.add_argument("--homo-oligomer", action="store_true",
                   help="tie position k of every designed chain (symmetric design of identical chains)")
    d.set_defaults(func=_design)

    sc = sub.add_parser("score", help="score the native or given sequences on structures (ProteinMPNN's --score_only)",
                        formatter_class=fmt)
    sc.add_argument("input", help="a .pdb/.cif file (optionally .gz) or a directory of them")
    sc.add_argument("--fasta", default=None, help="sequences to score (one structure; chains separated by '/', as "
                    "`design` writes them; default: the native sequence)")
    sc.add_argument("--chains", default=None,
                    help="chains whose residues make the score (default: all), or ProteinMPNN's chain-id JSON ({name: "
                         "[[scored], [others]]})")
    sc.add_argument("--out", default=None, help="also write per-residue log-probabilities and scores as JSON")
    sc.add_argument("--conditional-probs", default=None, metavar="NPZ",
                    help="also write, per structure and sequence, every residue's log-probabilities of all 21 types "
                         "given every other residue (ProteinMPNN's --conditional_probs_only; mutation effects): "
                         "<name>__log_probs (sequences x L x 21, NaN at X / no backbone), <name>__labels, "
                         "<name>__sequences, alphabet")
    sc.add_argument("--checkpoint", default=None, help="checkpoint or run directory (default: the shipped REED model)")
    sc.add_argument("--device", default="cpu", help="cpu / cuda")
    add_threads_argument(sc)
    sc.set_defaults(func=_score)

    pk = sub.add_parser("pack", help="pack a folder of PDB/mmCIF files into a training set (.npz) with a cluster split",
                        formatter_class=fmt)
    pk.add_argument("input", help="a directory of .pdb/.cif files (optionally .gz), or one file")
    pk.add_argument("--out", required=True, help="output .npz (train on it with `train --data`)")
    pk.add_argument("--min-length", type=int, default=30, help="shortest chain kept (residues)")
    pk.add_argument("--max-length", type=int, default=500, help="longest chain kept (residues)")
    pk.add_argument("--min-identity", type=float, default=0.3, help="sequence identity that joins a cluster")
    pk.add_argument("--valid-fraction", type=float, default=0.1, help="chains in the valid split (whole clusters)")
    pk.add_argument("--test-fraction", type=float, default=0.1, help="chains in the test split (whole clusters)")
    pk.add_argument("--seed", type=int, default=0, help="seed of the cluster split")
    pk.add_argument("--source", default=None, help="source tag stored per chain (default: the directory name)")
    pk.add_argument("--quiet", action="store_true", help="no progress or summary output")
    pk.set_defaults(func=_pack)

    t = sub.add_parser("train", help="train vanilla / REPA-style / REED models on the packed chains", formatter_class=fmt)
    t.add_argument("--method", choices=METHOD_NAMES, default="reed", help="training method")
    t.add_argument("--preset", choices=sorted(PROTEIN_PRESETS), default=None, help="model size (default: paper)")
    t.add_argument("--init", default=None,
                   help="fine-tune: start a fresh run from this checkpoint or run directory (its EMA weights and "
                        "model size; `shipped`: the shipped model)")
    t.add_argument("--steps", type=int, default=20000, help="optimizer steps")
    t.add_argument("--batch-size", type=int, default=32, help="chains per step")
    t.add_argument("--max-length", type=int, default=256, help="training crop length")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    add_lr_schedule_arguments(t)
    add_weight_decay_argument(t)
    t.add_argument("--dropout", type=float, default=None,
                   help="the denoiser's dropout rate (default: the preset's, or the --init checkpoint's; 0.1 as in "
                        "ProteinMPNN)")
    add_precision_argument(t)
    add_grad_accum_argument(t)
    t.add_argument("--loss", choices=("elbo", "smoothed"), default="elbo", help="masked-diffusion loss")
    t.add_argument("--backbone-noise", type=float, default=0.0, metavar="ANGSTROM",
                   help="Gaussian noise on training backbones (ProteinMPNN's augmentation: 0.2 in v_48_020)")
    t.add_argument("--crop", choices=CROPS, default="random",
                   help="crop windows of chains longer than --max-length: drawn anew every step, or one fixed "
                        "window per chain (the setting of the benchmark tables before this option)")
    t.add_argument("--align-coefficient", type=float, default=None,
                   help="projection coefficient lambda (default: the preset's, 0.2)")
    t.add_argument("--seed", type=int, default=0, help="seed")
    t.add_argument("--data", default=None, help="packed chains (.npz; default: the repository's data/chains.npz)")
    t.add_argument("--out", default="runs/protein", help="run directory; resumes if present")
    t.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    t.add_argument("--teachers", choices=sorted(TEACHER_SETS), default="mpnn",
                   help="pair/structure teachers: ProteinMPNN v_48_020's encoder (needs reed-protein[mpnn]) or the "
                        "in-project pair geometry + structure encoder")
    t.add_argument("--no-cache-teachers", action="store_true",
                   help="run the teachers on every crop instead of once per whole chain")
    t.add_argument("--distill", type=float, default=0.0, metavar="WEIGHT",
                   help="also distil ProteinMPNN v_48_020's amino-acid distribution into the prediction, at this "
                        "weight relative to the data term, in every method (0: off; needs reed-protein[mpnn])")
    t.add_argument("--distill-from", choices=DISTILL_FROM, default="profile",
                   help="what --distill matches: ProteinMPNN's structure-only profile (cached), or its distribution "
                        "given the residues left visible at each step (conditional: one ProteinMPNN pass per step)")
    t.add_argument("--mpnn-noise", choices=MPNN_NOISE_LEVELS, default="020",
                   help="which ProteinMPNN weights every ProteinMPNN teacher (and --distill) uses: v_48_<this>, "
                        "trained with this many hundredths of an Å of backbone noise (002: the sharpest profile)")
    t.add_argument("--pairs-per-token", type=int, default=PAIRS_PER_TOKEN,
                   help="random kNN edges per residue the pair latent aligns each step (0: all of them)")
    t.add_argument("--cache-dir", default=None,
                   help="where cached teacher features are kept between runs (default $REED_PROTEIN_CACHE or "
                        "~/.cache/reed-protein)")
    t.add_argument("--time-budget", default=None,
                   help="stop cleanly with a checkpoint before this much wall time (e.g. 8m, 90s, 1h30m); rerun to resume")
    t.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="score the EMA weights on the validation split every N steps (validation.jsonl) and keep the "
                        "best-recovery weights in OUT/best (design/eval with --checkpoint OUT/best); 0: never")
    t.add_argument("--eval-chains", type=int, default=0, metavar="N",
                   help="validate on a fixed random N of the validation chains (0: all of them)")
    t.add_argument("--eval-seed", type=int, default=0, metavar="S",
                   help="seed of the validation chain choice and sampler, apart from --seed so that runs with different "
                        "training seeds validate on the same chains ('eval --seed S' reproduces the logged scores)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="sequence recovery and perplexity on held-out chains", formatter_class=fmt)
    e.add_argument("--checkpoint", default=None, help="checkpoint or run directory (default: the shipped model)")
    e.add_argument("--splits", default="test,ts50", help="comma-separated: valid, test, ts50")
    e.add_argument("--steps", type=int, default=20, help="sampling steps")
    e.add_argument("--temperature", type=float, default=0.1, help="sampling temperature")
    e.add_argument("--seed", type=int, default=0, help="seed")
    e.add_argument("--order", choices=UNMASK_ORDERS, default="random",
                   help="which masked residues each step unmasks: random, or the most confident draws first")
    e.add_argument("--data", default=None, help="packed chains (.npz)")
    e.add_argument("--device", default="cpu", help="cpu / cuda")
    e.add_argument("--json", default=None, help="also write the results as JSON")
    e.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    from reed_core.cli import run_cli

    # torch-free (the parser is built inside run_cli), so the start-up clock of auto --threads sees torch load
    from .structure import StructureError

    return run_cli("reed-protein", build_parser, argv, (StructureError,))  # DesignError is a ValueError


if __name__ == "__main__":
    sys.exit(main())
