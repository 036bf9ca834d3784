"""The qa task: bAbI-style story question answering, with the supporting facts to check the attention against.

* data: :mod:`attnzoo.data.babi`, a seeded simulator of bAbI-style stories
  (synthetic, as the original bAbI tasks are): ``--story-task single`` (bAbI
  task 1), ``two`` (task 2) or ``yesno`` (task 6); ``--stories`` training
  stories (default 1,000, five questions each), 100 dev and 200 test stories
  drawn with other seeds;
* model: ``--model memnet`` (:class:`~attnzoo.models.memnet.MemN2N`, K hops of
  dot-product attention over the sentences, trained with the paper's linear
  start for its first 15 epochs) or ``--model reader``
  (:class:`~attnzoo.models.memnet.AttentiveReader`, a BiGRU over the story's
  words with any content mechanism in its slot: ``--attention
  dot|scaled_dot|general|additive|cosine``); without ``--minutes`` or
  ``--epochs``, 40 epochs for memnet and 10 for the reader;
* metrics: test accuracy (the primary metric), and the *support share*: the
  attention weight that falls on the question's supporting-fact sentences.
  For each question and hop k, share_k = sum of hop k's weights over the
  supporting sentences (in [0, 1]; the reader's word weights are summed per
  sentence first). metrics.json gives the mean over questions of each hop's
  share (``hop_support_share``), of the last hop's (``last_hop_support_share``)
  and of the largest over hops (``support_share``: the hop that looks hardest
  at the facts, whichever it is).

:class:`QuestionAnswering` is the task (``TASKS["qa"]``); a trained run's
:class:`StoryReader` answers questions about a story. The report shows a few test questions with each
hop's weights over the sentences of the story so far (rows: sentences, supporting facts marked ★;
columns: hops), the prediction and the answer.

Shape legend: N questions, B batch, S sentences, W words per sentence, Wq
question words, V vocabulary, K hops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import validate as V
from ..data import babi
from ..data.vocab import Vocab
from ..models.memnet import READER_ATTENTION, AttentiveReader, MemN2N, MemNetConfig, ReaderConfig
from ..models.options import check_options
from ..training.options import TrainOptions, option
from .base import Map, Task, Training

MODELS = {"memnet": (MemN2N, MemNetConfig), "reader": (AttentiveReader, ReaderConfig)}
DEFAULT_ATTENTION = {"memnet": "dot", "reader": "additive"}
ATTENTION = {"memnet": ("dot",), "reader": READER_ATTENTION}
MODEL_DEFAULTS = {"memnet": dict(dim=32, hops=3), "reader": dict(embed_dim=32, hidden_dim=64, dropout=0.1)}
DEFAULT_EPOCHS = {"memnet": 40.0, "reader": 10.0}  # no budget given: a fixed amount of work, the same anywhere
REPORT_QUESTIONS = 4  # test questions drawn in the report


@dataclass
class QAConfig(TrainOptions):
    batch_size: int = 32  # questions per step (the paper's)
    model: str = "memnet"  # memnet | reader
    story_task: str = option("single", "single (bAbI task 1) | two (task 2) | yesno (task 6)", choices=babi.TASKS)
    stories: int = option(1000, "training stories, five questions each", low=1, example="1000")
    dev_stories: int = 100  # 500 dev questions: the best weights are chosen on them
    test_stories: int = 200  # 1,000 test questions, as bAbI's test sets
    memory_size: int = 50  # sentences a question sees at most: the latest ones (the paper's limit)
    eval_every_minutes: float = 0.25  # dev questions score in milliseconds: a finer learning curve
    precision: str = "fp32"  # matmuls this small gain nothing from bf16 and lose accuracy
    linear_start_epochs: int = 15  # memnet: its first epochs without the hops' softmax (LS): two 38% -> 95%
    threads: int | None = option(1, "torch CPU threads while training: these models are too small to split "
                                 "(2 threads made steps 13x slower)", low=1, example="2")

    default_lr = 5e-3

    def __post_init__(self):
        V.check_choice("model", self.model, MODELS)
        V.check_choice("story task", self.story_task, babi.TASKS)
        if self.minutes is None and self.epochs is None:
            self.epochs = DEFAULT_EPOCHS[self.model]
        super().__post_init__()
        if isinstance(self.linear_start_epochs, bool) or not isinstance(self.linear_start_epochs, int) \
                or self.linear_start_epochs < 0:
            raise ValueError(f"linear_start_epochs must be an int >= 0, got {self.linear_start_epochs!r}")
        for name in ("stories", "dev_stories", "test_stories", "memory_size"):
            V.check_positive(name, getattr(self, name))


def linear_start_epochs(cfg: QAConfig) -> int:
    """Epochs of MemN2N's linear start: ``cfg.linear_start_epochs``, at most 40% of an --epochs budget (the
    softmax must come back in time); with a --minutes budget, the first ``cfg.linear_start_epochs`` epochs."""
    if cfg.model != "memnet":
        return 0
    if cfg.epochs is not None:
        return min(cfg.linear_start_epochs, int(0.4 * cfg.epochs))
    return cfg.linear_start_epochs


def check_model(model: str, attention: str, options: dict | None) -> None:
    """--model, --attention and --set of a qa run, before any data is made."""
    V.check_choice("model", model, MODELS)
    V.check_choice(f"attention (the {model}'s slot)", attention, ATTENTION[model])
    check_options(model, options, MODELS[model][1], {"vocab", "memory_size", "attention"})


def build_model(model: str, vocab: int, attention: str, memory_size: int, overrides: dict | None) -> nn.Module:
    check_model(model, attention, overrides)
    cls, config_cls = MODELS[model]
    options = {**MODEL_DEFAULTS[model], **(overrides or {})}
    if model == "reader":
        options["attention"] = attention
    return cls(config_cls(vocab=vocab, memory_size=memory_size, **options))


def rebuild(model: str, config: dict) -> nn.Module:
    cls, config_cls = MODELS[model]
    return cls(config_cls.from_dict(config))


@torch.no_grad()
def predict(model: nn.Module, data: babi.EncodedQA, device, batch_size: int = 500) -> tuple[Tensor, list[Tensor]]:
    """The predicted word ids (N,) and each question's (K, S_n) weights over its story's sentences."""
    model.eval()
    preds, weights = [], []
    for i in range(0, len(data), batch_size):
        b = data.batch(torch.arange(i, min(i + batch_size, len(data)))).to(device)
        logits, w = model(b.story, b.question)  # (B, V), (B, K, S)
        preds.append(logits.argmax(-1).cpu())
        weights += [w[n, :, :int(s)].float().cpu() for n, s in enumerate(b.sentences)]  # (K, S_n) each
    return (torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)), weights


def score(model: nn.Module, data: babi.EncodedQA, device) -> dict:
    """Accuracy and support shares (see the module docstring) of ``model`` on ``data``."""
    preds, weights = predict(model, data, device)
    shares = torch.stack([(w.double() * data.support[n, :w.shape[1]]).sum(-1) for n, w in enumerate(weights)]) \
        if weights else torch.zeros(0, 1)  # (N, K)
    return {"accuracy": int((preds == data.answer).sum()) / len(preds) if len(preds) else 0.0,
            "support_share": round(float(shares.max(-1).values.mean()), 4) if len(shares) else 0.0,
            "last_hop_support_share": round(float(shares[:, -1].mean()), 4) if len(shares) else 0.0,
            "hop_support_share": [round(float(x), 4) for x in shares.mean(0)] if len(shares) else []}


def majority_accuracy(data: babi.EncodedQA) -> float:
    """The accuracy of always answering the most common answer: the chance level to beat."""
    return float(torch.bincount(data.answer).max()) / max(len(data), 1)


@dataclass
class QAData:
    split: babi.QASplit
    vocab: Vocab
    train: babi.EncodedQA
    dev: babi.EncodedQA
    test: babi.EncodedQA
    test_examples: list[babi.Example]


def make_data(cfg: QAConfig) -> QAData:
    split = babi.make_split(cfg.story_task, cfg.stories, cfg.dev_stories, cfg.test_stories, seed=cfg.seed)
    vocab = babi.build_vocab(split.train)
    parts = {name: babi.examples(getattr(split, name)) for name in ("train", "dev", "test")}
    enc = {name: babi.encode(ex, vocab, cfg.memory_size) for name, ex in parts.items()}
    return QAData(split, vocab, enc["train"], enc["dev"], enc["test"], parts["test"])


# ----------------------------------------------------------------------------- a trained model
@dataclass
class Answer:
    answer: str  # the predicted word
    weights: Tensor  # (K, S) each hop's weights over the story's sentences (the last memory_size of them)
    sentences: list[str]  # those sentences


@dataclass
class StoryReader:
    """A trained qa model with its words: ``answer(story, question)``."""

    model: nn.Module
    vocab: Vocab
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def answer(self, story: str | list[str], question: str) -> Answer:
        """The answer to ``question`` about ``story`` (a list of sentences, or one text split at full stops)."""
        if isinstance(story, str):
            story = [s.strip() + "." for s in story.split(".") if s.strip()]
        if not isinstance(story, (list, tuple)) or not all(isinstance(s, str) for s in story):
            raise TypeError(f"story must be a list of sentences (str) or one str, got {type(story).__name__}")
        if not isinstance(question, str) or not babi.tokenize(question):
            raise ValueError(f"question must be a non-empty string such as 'Where is Mary?', got {question!r}")
        words = set(self.vocab.tokens)
        unknown = sorted({w for s in [*story, question] for w in babi.tokenize(s)} - words)
        if unknown:
            raise ValueError(f"words the model never saw: {', '.join(map(repr, unknown))}")
        kept = list(story)[-self.model.config.memory_size:]
        ids = babi.encode_story(kept, self.vocab, self.model.config.memory_size)
        W = max([len(w) for w in ids] + [1])
        story_ids = torch.zeros(1, max(len(ids), 1), W, dtype=torch.long)  # (1, S, W)
        for i, w in enumerate(ids):
            story_ids[0, i, :len(w)] = torch.tensor(w)
        q = torch.tensor([self.vocab.encode(babi.tokenize(question))])  # (1, Wq)
        with torch.no_grad():
            logits, w = self.model.eval()(story_ids.to(self.device), q.to(self.device))
        return Answer(self.vocab.tokens[int(logits[0].argmax())], w[0, :, :len(kept)].float().cpu(), kept)

    def predict(self, story, question) -> Answer:
        return self.answer(story, question)


# ----------------------------------------------------------------------------- the task
def _line(s: dict) -> str:
    return (f"accuracy {s['accuracy']:.2%}  weight on the supporting facts {s['support_share']:.2%} "
            f"({s['questions']:,} questions)")


class QuestionAnswering(Task):
    """bAbI-style stories (synthetic): a memory network or an attentive reader; accuracy and the attention's weight
    on the supporting facts."""

    name = "qa"
    description = ("bAbI-style story questions (synthetic, seeded): a memory network (default) or an attentive "
                   "reader; accuracy and the weight on the supporting facts")
    Config = QAConfig
    models: ClassVar[dict[str, str]] = dict(DEFAULT_ATTENTION)
    unit = "questions"
    verb = "answer"

    # ------------------------------------------------------------------ choosing, before any data loads
    def choose(self, model: str | None, attention: str | None) -> tuple[str, str]:
        model = model or next(iter(self.models))
        V.check_choice("model", model, MODELS)
        return model, attention or DEFAULT_ATTENTION[model]

    def check_model(self, model: str, attention: str, overrides: dict | None) -> None:
        check_model(model, attention, overrides)

    def model_config(self, model: str) -> type:
        return MODELS[model][1]

    # ------------------------------------------------------------------ the parts of training (no data to install)
    def load_data(self, cfg: QAConfig) -> QAData:
        return make_data(cfg)

    def describe(self, data: QAData) -> dict:
        task = data.split.task
        return {"synthetic": True, "story_task": task, "babi_task": babi.BABI_TASK[task],
                "train_stories": len(data.split.train), "train_questions": len(data.train),
                "dev_stories": len(data.split.dev), "dev_questions": len(data.dev),
                "test_stories": len(data.split.test), "test_questions": len(data.test),
                "longest_story": int(data.train.sentences.max()), "vocab": len(data.vocab)}

    def build(self, cfg: QAConfig, data: QAData, attention: str, overrides: dict | None) -> nn.Module:
        return build_model(cfg.model, len(data.vocab), attention, cfg.memory_size, overrides)

    def predictor(self, model: nn.Module, data: QAData, device) -> StoryReader:
        return StoryReader(model, data.vocab, device)

    def saved(self, data: QAData) -> dict:
        return {"vocab": data.vocab.to_list()}

    def training(self, cfg: QAConfig, data: QAData, reader: StoryReader) -> Training:
        n, device = len(data.train), reader.device
        steps_per_epoch = max(1, -(-n // cfg.batch_size))
        linear_epochs = linear_start_epochs(cfg)

        def batches(epoch):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g)
            for i in range(steps_per_epoch):
                yield data.train.batch(order[i * cfg.batch_size: (i + 1) * cfg.batch_size]), epoch < linear_epochs

        def loss(m, batch):
            b, linear = batch[0].to(device), batch[1]
            logits, _ = m(b.story, b.question, linear=True) if linear else m(b.story, b.question)
            return F.cross_entropy(logits.float(), b.answer), len(b)

        def evaluate(m) -> dict:
            return {f"dev_{k}": v for k, v in score(m, data.dev, device).items() if k in ("accuracy", "support_share")}

        return Training(batches=batches, steps_per_epoch=steps_per_epoch, loss=loss, evaluate=evaluate,
                        primary="dev_accuracy", higher_is_better=True, grad_clip=40.0)

    def final(self, cfg: QAConfig, data: QAData, reader: StoryReader) -> dict:
        dev, test = score(reader.model, data.dev, reader.device), score(reader.model, data.test, reader.device)
        return {"primary": {"name": "accuracy", "value": test["accuracy"], "higher_is_better": True},
                "story_task": cfg.story_task, "synthetic": True,
                "dev": {**dev, "questions": len(data.dev)},
                "test": {**test, "questions": len(data.test), "majority_answer_accuracy": majority_accuracy(data.test)}}

    def report(self, path, cfg, data: QAData, reader: StoryReader, metrics, config, records) -> None:
        write_qa_report(path, reader.model, data, metrics, config, records, reader.device)

    # ------------------------------------------------------------------ a trained run
    def restore(self, config: dict, checkpoint: dict, device) -> StoryReader:
        model = rebuild(checkpoint["config"]["model"], checkpoint["config"]["model_config"])
        model.load_state_dict(checkpoint["model"])
        return StoryReader(model.to(device), Vocab.from_list(checkpoint["vocab"]), device)

    def evaluate(self, run_dir, config: dict, reader: StoryReader, **_: Any) -> dict:
        """Accuracy and support shares on the run's dev and test questions (made again from its seed)."""
        data = make_data(self.saved_config(config))
        return {part: {**score(reader.model, getattr(data, part), reader.device),
                       "questions": len(getattr(data, part))} for part in ("dev", "test")}

    def attention(self, reader: StoryReader, story, question: str | None = None, **_: Any) -> dict[str, Map]:
        """Each hop's weights over the sentences of ``story`` (sentences, or one text) while answering
        ``question``; ``story`` may also be the pair (story, question)."""
        if question is None and isinstance(story, tuple) and len(story) == 2 and isinstance(story[1], str):
            story, question = story
        if question is None:
            raise ValueError("qa draws the attention of a question about a story: attention(story, "
                             "question='Where is Mary?') or attention((story, question))")
        a = reader.answer(story, question)
        return {"hops": Map(a.weights, [f"hop {k + 1}" for k in range(a.weights.shape[0])], a.sentences,
                            f"{question} -> {a.answer}")}

    def show_name(self, item: Any) -> str:
        return "attention.png"

    # ------------------------------------------------------------------ what the commands print
    def summary(self, m: dict) -> list[str]:
        return [f"qa {m['model']} {m['attention']} {m['story_task']} (synthetic bAbI-style stories): "
                f"{m['params']:,} parameters, {m['train_seconds']:.0f} s training ({m['epochs']} epochs)",
                *self.eval_lines(m, "  ")]

    def eval_lines(self, r: dict, indent: str = "") -> list[str]:
        return [f"{indent}{part:<5} {_line(r[part])}" for part in ("dev", "test")]


TASK = QuestionAnswering()


# ----------------------------------------------------------------------------- the module's functions
def train(cfg: QAConfig, out_dir: str | Path, attention: str | None = None, model_overrides: dict | None = None,
          progress: bool | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate, write the run directory; ``resume`` is a saved training state to continue from."""
    return TASK.train(cfg, out_dir, attention=attention, overrides=model_overrides, progress=progress, resume=resume)


def load(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, Vocab, dict]:
    """(model in eval mode, vocabulary, config.json) of a qa run."""
    config, reader = TASK.load(run_dir, device)
    return reader.model, reader.vocab, config


def evaluate_run(run_dir: str | Path) -> dict:
    """Accuracy and support shares of a trained run on its dev and test questions (made again from its seed)."""
    config, reader = TASK.load(run_dir)
    return TASK.evaluate(Path(run_dir), config, reader)


def _story_png(weights: Tensor, sentences: list[str], support: tuple[int, ...], title: str) -> bytes:
    """Each hop's weights over the story's sentences: rows sentences (★ = supporting fact), columns hops."""
    from ..viz.heatmap import figure_png_bytes, new_figure, plot_alignment

    S, K = len(sentences), weights.shape[0]
    labels = [f"{'★' if i in support else ' '} {i + 1}. {s}" for i, s in enumerate(sentences)]
    fig = new_figure((2.0 + 0.7 * K + 0.09 * max(len(x) for x in labels), 1.0 + 0.3 * S))
    ax = plot_alignment(weights.t().numpy(), [str(k + 1) for k in range(K)], labels, ax=fig.add_subplot(),
                        title=title)
    ax.set_xlabel("hop")
    ax.set_ylabel("")
    for tick, i in zip(ax.get_yticklabels(), range(S)):
        if i in support:
            tick.set_fontweight("bold")
    for k in range(K):
        for i in range(S):
            value = float(weights[k, i])
            if value >= 0.05:
                ax.text(k, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
    fig.colorbar(ax.images[0], ax=ax, fraction=0.05, pad=0.03).ax.tick_params(labelsize=8)
    try:
        return figure_png_bytes(fig)
    finally:
        fig.clear()


def write_qa_report(out: Path, model: nn.Module, data: QAData, metrics: dict, config: dict, records: list,
                    device) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.report import write_report

    preds, weights = predict(model, data.test, device)
    # the last question of the first test stories (the longest contexts), and the first wrong answer if any
    picks, n = [], 0
    for story in data.split.test[:REPORT_QUESTIONS - 1]:
        n += len(story.questions)
        picks.append(n - 1)
    wrong = [i for i in range(len(preds)) if int(preds[i]) != int(data.test.answer[i]) and i not in picks]
    if wrong:
        picks.append(wrong[0])
    figures = []
    for i in picks:
        e = data.test_examples[i]
        kept = list(e.story)[-model.config.memory_size:]
        dropped = len(e.story) - len(kept)
        support = tuple(s - dropped for s in e.support if s >= dropped)
        pred = data.vocab.tokens[int(preds[i])]
        mark = "✓" if pred == e.answer else "✗"
        title = f"{e.question}  predicted {pred}, answer {e.answer} {mark}"
        share = ", ".join(f"{float(weights[i][k, list(support)].sum()):.0%}" for k in range(weights[i].shape[0]))
        figures.append({"png": _story_png(weights[i], kept, support, title),
                        "legend": f"test question {i + 1}: {e.question} predicted {pred}, answer {e.answer} "
                                   f"{mark}. Weight on the supporting facts (★) per hop: {share}"})
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_accuracy", "dev_support_share"]) \
        if records else None
    d = config["data"]
    notes = [f"Synthetic data: bAbI-style stories (Weston et al. 2015, task {d['babi_task']}, "
             f"'{d['story_task']}') written by attnzoo's seeded simulator (attnzoo/data/babi.py), not the original "
             "bAbI files; the bAbI tasks are synthetic too.",
             f"{d['train_stories']:,} training stories ({d['train_questions']:,} questions), {d['dev_stories']} dev "
             f"and {d['test_stories']} test stories ({d['dev_questions']:,} and {d['test_questions']:,} questions) "
             f"drawn with other seeds; each question sees the story so far (at most the last "
             f"{model.config.memory_size} sentences). Always answering the most common test answer scores "
             f"{metrics['test']['majority_answer_accuracy']:.2%}.",
             "Support share: for each question and hop, the attention weight on its supporting-fact sentences; "
             "support_share is the mean over questions of the largest share over hops, last_hop_support_share "
             "that of the last hop, hop_support_share each hop's mean."]
    write_report(out / "report.html", title=f"qa · {metrics['model']} · {metrics['attention']} · "
                                            f"{metrics['story_task']}", metrics=metrics, config=config,
                 curves_png=curves, notes=notes, figures=figures)
