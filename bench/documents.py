"""Documents: scanned papers through the real server (upload -> extract -> preprocess), per stage and
per page, with OCR character accuracy against the known text, and Tesseract's two Python paths compared
in the same run (tesserocr's C++ API, which Moltbot uses, against pytesseract, the CLI per page).

    python bench/documents.py [--papers 3] [--pages 10] [--chinese 1]

The bench makes its own test set: papers with known content typeset at 300 and 200 dpi in grayscale,
degraded like scans (skew up to 1.5 degrees, blur, speckle, JPEG at quality 60-80) and wrapped as
image-only PDFs; a Chinese paper is typeset in WenQuanYi Micro Hei (Debian's fonts-wqy-microhei).
Summaries are made by the instruct model (--model, the 1.5B by default): key-fact recall (the
accuracy, the gain, the dataset and the method of each English paper) and numbers in the summary
that are not in the source. Entities: precision over the people and organisations in the paper's graph,
over its methods and datasets, and recall of its authors, institute, method and dataset (F1 from the
precision over all four types); relations: authored_by, affiliated_with, uses_method, evaluated_on.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import prepare_data_dir  # first: it puts the repository on sys.path
from PIL import Image
from rapidfuzz.distance import Levenshtein

from moltbot.models.bundled import MINILM, QWEN_1_5B, install_bundled
from moltbot.models.store import ModelStore
from tests.helpers import START_TIMEOUT_S, Server, running_server
from tests.scans import page_image, scanned_pdf

FIRST = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kenji", "Lena"]
LAST = ["Smith", "Okafor", "Wang", "Novak", "Garcia", "Haddad", "Ivanova", "Tanaka", "Muller", "Rossi"]
ORGS = [
    "Massachusetts Institute of Technology",
    "University of Cambridge",
    "Max Planck Institute for Informatics",
    "Tsinghua University",
    "ETH Zurich",
    "University of Toronto",
]
METHODS = ["contrastive pretraining", "gradient boosting", "graph attention networks", "beam search", "LoRA"]
DATASETS = ["ImageNet", "SQuAD", "CIFAR-10", "GLUE", "Common Crawl", "MIMIC-III"]
FILLER = [
    "The experiments were repeated with different random seeds to estimate the variance of each result.",
    "We describe the preprocessing of the data, the model configuration and the evaluation protocol.",
    "Ablations show that each component contributes to the final performance of the system.",
    "The training schedule uses a linear warmup followed by cosine decay of the learning rate.",
    "Limitations of the approach include its cost at inference time and its sensitivity to noise.",
    "Related work on retrieval, summarisation and information extraction is discussed in the appendix.",
    "All numbers are averaged over five runs and reported with their standard deviation.",
]
ZH_NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静"]
ZH_ORGS = ["清华大学", "北京大学", "中国科学院自动化研究所", "浙江大学"]
ZH_FILLER = [
    "本文提出了一种新的文本识别方法，并在多个公开数据集上进行了系统的实验。",
    "实验结果表明，该方法在准确率和速度两方面均优于现有的基线模型。",
    "我们详细介绍了数据预处理、模型结构以及评价指标的设计。",
    "消融实验说明每个模块对最终性能都有明显的贡献。",
    "未来的工作包括将该方法推广到更多语言和更复杂的版面。",
]


@dataclass
class Paper:
    name: str
    language: str
    pages: list[str]
    dpi: int
    pdf: bytes = b""
    facts: list[str] = field(default_factory=list)  # what a summary should hold
    entities: dict[str, set[str]] = field(default_factory=dict)  # type -> names printed in the paper
    authored_by: set[str] = field(default_factory=set)


def english_paper(seed: int, pages: int, dpi: int) -> Paper:
    rng = random.Random(seed)
    authors = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(3)]
    org = rng.choice(ORGS)
    method, dataset = rng.choice(METHODS), rng.choice(DATASETS)
    accuracy, gain = rng.randint(700, 990) / 10, rng.randint(5, 60) / 10
    texts = [
        f"Learning Robust Representations with {method.title()}\n\n{', '.join(authors)}\n\n{org}\n\nAbstract. "
        f"We study {method} on {dataset}. Our model reaches an accuracy of {accuracy} percent "
        f"and improves on the previous best result by {gain} points. " + " ".join(rng.sample(FILLER, 3))
    ]
    for number in range(2, pages + 1):
        paragraphs = []
        for _ in range(4):
            who = rng.choice(authors)
            numbers = (
                f"{rng.randint(100, 999)} samples in {rng.randint(2, 64)} batches with a loss of {rng.random():.3f}"
            )
            sentences = [
                f"In section {number}, {who} applies {method} to {dataset} using {numbers}.",
                *rng.sample(FILLER, 2),
            ]
            paragraphs.append(" ".join(sentences))
        texts.append("\n\n".join(paragraphs))
    entities = {"person": set(authors), "organization": {org}, "method": {method}, "dataset": {dataset}}
    facts = [str(accuracy), str(gain), dataset, method]
    return Paper(f"en-{dpi}dpi-{seed}", "eng", texts, dpi, facts=facts, entities=entities, authored_by=set(authors))


def chinese_paper(seed: int, pages: int, dpi: int) -> Paper:
    rng = random.Random(seed)
    texts = []
    for number in range(1, pages + 1):
        lines = [f"第{number}节：{rng.choice(ZH_NAMES)}（{rng.choice(ZH_ORGS)}）的研究。"]
        lines += [rng.choice(ZH_FILLER) + f"准确率为{rng.randint(700, 990) / 10}%。" for _ in range(8)]
        texts.append("\n\n".join(lines))
    return Paper(f"zh-{dpi}dpi-{seed}", "chi_sim+eng", texts, dpi)


def render(paper: Paper, rng: random.Random) -> list[Image.Image]:
    images = []
    font = None
    if paper.language.startswith("chi"):
        font = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
    for index, text in enumerate(paper.pages):
        images.append(
            page_image(
                text,
                dpi=paper.dpi,
                skew_degrees=rng.uniform(-1.5, 1.5),
                blur=rng.uniform(0.3, 0.8),
                noise=rng.uniform(0.001, 0.004),
                seed=index,
                font=font,
                chars_per_line=36 if font else 70,
            )
        )
    paper.pdf = scanned_pdf(images, dpi=paper.dpi, jpeg_quality=rng.randint(60, 80))
    return images


def normalise(text: str, language: str) -> str:
    if language.startswith("chi"):
        return "".join(text.split())
    return " ".join(text.split())


def char_accuracy(found: str, truth: str, language: str) -> float:
    a, b = normalise(found, language), normalise(truth, language)
    return max(0.0, 1 - Levenshtein.distance(a, b) / max(1, len(b)))


@dataclass
class WorkerWatch:
    """The server's document workers: peak RSS and CPU seconds (sampled every 20 ms)."""

    server_pid: int
    peak_rss: int = 0
    cpu: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        parent = psutil.Process(self.server_pid)
        while not self._stop.is_set():
            try:
                for child in parent.children(recursive=True):
                    try:
                        if "moltbot.documents.worker" not in " ".join(child.cmdline()):
                            continue
                        self.peak_rss = max(self.peak_rss, child.memory_info().rss)
                        times = child.cpu_times()
                        self.cpu[child.pid] = times.user + times.system
                    except psutil.Error:
                        continue
            except psutil.Error:
                pass
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()


def follow(client: httpx.Client, document_id: str) -> dict[str, float]:
    """Seconds from upload to each stage's start and to the end, from the job's events."""
    started = time.perf_counter()
    stages: dict[str, float] = {}
    with client.stream("GET", f"/v1/documents/{document_id}/events", timeout=3600) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                card = json.loads(line[6:])
                stages.setdefault(card["stage"], time.perf_counter() - started)
    stages["end"] = time.perf_counter() - started
    return stages


def run_server_set(server: Server, key: str, papers: list[Paper], dump: Path | None = None) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, verify=server.verify, timeout=600
    ) as client:
        for paper in papers:
            watch = WorkerWatch(server.process.pid)
            thread = threading.Thread(target=watch.run, daemon=True)
            thread.start()
            began = time.perf_counter()
            response = client.post(
                "/v1/documents",
                files={"file": (f"{paper.name}.pdf", paper.pdf, "application/pdf")},
                data={"languages": paper.language},
            )
            response.raise_for_status()
            document_id = response.json()["id"]
            upload_s = time.perf_counter() - began
            stages = follow(client, document_id)
            watch.stop()
            thread.join()
            detail = client.get(f"/v1/documents/{document_id}").json()
            summary = client.get(f"/v1/documents/{document_id}/summary").json()
            texts = client.get(f"/v1/documents/{document_id}/pages").json()["data"]
            accuracy = [
                char_accuracy(p["text"], truth, paper.language) for p, truth in zip(texts, paper.pages, strict=True)
            ]
            page_seconds = [p["seconds"] for p in detail["page_results"]]
            extract_s = stages.get("preprocess", stages["end"]) - stages.get("extract", 0.0)
            summarize_s = stages["end"] - stages["summarize"] if "summarize" in stages else 0.0
            said = " ".join(
                [summary.get("abstract", "")]
                + [f["text"] for f in summary.get("key_findings", [])]
                + summary.get("methods", [])
                + summary.get("datasets", [])
            )
            source_numbers = numbers(" ".join(paper.pages))
            invented = sorted(numbers(said) - source_numbers)
            graph = client.get("/v1/graph/subgraph", params={"document_id": document_id}).json()
            scores = entity_scores(paper, graph)
            if dump is not None:
                dump.mkdir(parents=True, exist_ok=True)
                record = {
                    "summary": summary,
                    "graph": graph,
                    "truth": {k: sorted(v) for k, v in paper.entities.items()},
                }
                (dump / f"{paper.name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False))
            rows.append(
                {
                    "paper": paper.name,
                    "pages": len(paper.pages),
                    "status": detail["status"],
                    "upload_s": upload_s,
                    "extract_s": extract_s,
                    "preprocess_s": stages.get("summarize", stages["end"]) - stages.get("preprocess", stages["end"]),
                    "summarize_s": summarize_s,
                    "summary_error": summary.get("error"),
                    "fact_recall": (
                        sum(f.casefold() in said.casefold() for f in paper.facts) / len(paper.facts)
                        if paper.facts
                        else None
                    ),
                    "invented_numbers": invented,
                    **scores,
                    "end_to_end_s": upload_s + stages["end"],
                    "page_s": statistics.mean(page_seconds),
                    "worker_cpu_s": sum(watch.cpu.values()),
                    "accuracy": statistics.mean(accuracy),
                    "accuracy_min": min(accuracy),
                    "worker_peak_rss_mb": watch.peak_rss / 2**20,
                    "chunks": len(client.get(f"/v1/documents/{document_id}/chunks").json()["data"]),
                }
            )
            row = rows[-1]
            print(
                f"  {paper.name}: {row['end_to_end_s']:.1f} s, accuracy {row['accuracy']:.4f}, summary "
                f"{row['summarize_s']:.1f} s, facts {row['fact_recall']}, invented numbers {row['invented_numbers']}"
                f"{', error ' + row['summary_error'] if row['summary_error'] else ''}",
                flush=True,
            )
    return rows


def compare_ocr_paths(images: list[Image.Image], truths: list[str], dpi: int) -> list[tuple[str, float, float]]:
    """tesserocr (one engine, in process) against pytesseract (the tesseract CLI per page)."""
    import pytesseract
    import tesserocr
    from PIL import ImageFilter

    prepared = [image.filter(ImageFilter.MedianFilter(3)) for image in images]
    results = []
    with tesserocr.PyTessBaseAPI(path="/usr/share/tesseract-ocr/5/tessdata/", lang="eng") as api:
        started = time.perf_counter()
        texts = []
        for image in prepared:
            api.SetImage(image)
            api.SetSourceResolution(dpi)
            texts.append(api.GetUTF8Text())
        seconds = (time.perf_counter() - started) / len(prepared)
    results.append(
        ("tesserocr", seconds, statistics.mean(char_accuracy(t, x, "eng") for t, x in zip(texts, truths, strict=True)))
    )
    started = time.perf_counter()
    texts = [pytesseract.image_to_string(image, lang="eng", config=f"--dpi {dpi}") for image in prepared]
    seconds = (time.perf_counter() - started) / len(prepared)
    results.append(
        (
            "pytesseract",
            seconds,
            statistics.mean(char_accuracy(t, x, "eng") for t, x in zip(texts, truths, strict=True)),
        )
    )
    return results


def compare_deskew(truths: list[str], dpi: int = 300) -> list[tuple[float, float, float, float, float]]:
    """Pages at growing skew read as they are and deskewed first (Moltbot's Ocr.read): (skew, plain
    accuracy, deskewed accuracy, plain s/page, deskewed s/page)."""
    import tesserocr
    from PIL import ImageFilter

    from moltbot.documents.extract import Ocr, tessdata_dir

    ocr = Ocr("eng")
    rows = []
    with tesserocr.PyTessBaseAPI(path=str(tessdata_dir()).rstrip("/") + "/", lang="eng") as api:
        for skew in (0.0, 3.0, 5.0, 8.0):
            plain, straight, plain_s, straight_s = [], [], 0.0, 0.0
            for index, truth in enumerate(truths):
                image = page_image(truth, dpi=dpi, skew_degrees=skew, blur=0.5, noise=0.002, seed=index)
                started = time.perf_counter()
                api.SetImage(image.filter(ImageFilter.MedianFilter(3)))
                api.SetSourceResolution(dpi)
                plain.append(char_accuracy(api.GetUTF8Text(), truth, "eng"))
                plain_s += time.perf_counter() - started
                started = time.perf_counter()
                straight.append(char_accuracy(ocr.read(image, dpi)[0], truth, "eng"))
                straight_s += time.perf_counter() - started
            count = len(truths)
            rows.append((skew, statistics.mean(plain), statistics.mean(straight), plain_s / count, straight_s / count))
    ocr.close()
    return rows


def entity_scores(paper: Paper, graph: dict[str, Any]) -> dict[str, Any]:
    """Entities: precision over the people and organisations in the paper's graph (from NER and the
    summary), precision over its methods and datasets (separately: the truth lists only the paper's
    one method and dataset, so a fair extra one counts as wrong), and recall of the authors, the
    institute, the method and the dataset. Relations: precision and recall over authored_by,
    affiliated_with, uses_method and evaluated_on triples."""
    if not paper.entities:
        return {k: None for k in ("entity_p", "entity_r", "named_p", "all_p", "relation_p", "relation_r")}
    found: dict[str, set[str]] = {}
    for node in graph["nodes"]:
        found.setdefault(node["type"], set()).update(n.casefold() for n in (node["name"], *node["aliases"]))
    truth = {t: {n.casefold() for n in names} for t, names in paper.entities.items()}
    hits = sum(len(names & found.get(t, set())) for t, names in truth.items())
    recall = hits / sum(len(names) for names in truth.values())

    def precision(types: tuple[str, ...]) -> float:
        judged = [n for n in graph["nodes"] if n["type"] in types]
        correct = sum(1 for n in judged if n["name"].casefold() in truth.get(n["type"], set()))
        return correct / len(judged) if judged else 0.0

    names = {n["id"]: ("document" if n["type"] == "document" else n["name"].casefold()) for n in graph["nodes"]}
    kinds = ("authored_by", "affiliated_with", "uses_method", "evaluated_on")
    said = {
        (e["relation"], names.get(e["source"], ""), names.get(e["target"], ""))
        for e in graph["edges"]
        if e["relation"] in kinds
    }
    (organization,) = truth["organization"]
    wanted = {("authored_by", "document", a.casefold()) for a in paper.authored_by}
    wanted |= {("affiliated_with", a.casefold(), organization) for a in paper.authored_by}
    wanted |= {("uses_method", "document", m) for m in truth["method"]}
    wanted |= {("evaluated_on", "document", d) for d in truth["dataset"]}
    return {
        "entity_p": precision(("person", "organization")),
        "entity_r": recall,
        "named_p": precision(("method", "dataset")),
        "all_p": precision(("person", "organization", "method", "dataset")),
        "relation_p": len(said & wanted) / len(said) if said else 0.0,
        "relation_r": len(said & wanted) / len(wanted),
    }


def f1(p: float | None, r: float | None) -> float | None:
    return None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)


def numbers(text: str) -> set[str]:
    return {n.rstrip(".,") for n in re.findall(r"\d+(?:[.,]\d+)*", text)}


def _mean_or_dash(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.mean(known):.2f}" if known else "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=3, help="English papers per resolution")
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--chinese", type=int, default=1, help="Chinese papers (300 dpi)")
    parser.add_argument("--model", default=QWEN_1_5B, help="the instruct model that summarizes")
    parser.add_argument("--dump", type=Path, help="write each paper's summary, graph and truth here (JSON)")
    args = parser.parse_args()
    rng = random.Random(7)
    papers = [english_paper(seed, args.pages, dpi) for dpi in (300, 200) for seed in range(args.papers)]
    papers += [chinese_paper(100 + seed, args.pages, 300) for seed in range(args.chinese)]
    first_images: list[Image.Image] = []
    for paper in papers:
        images = render(paper, rng)
        if not first_images and paper.language == "eng" and paper.dpi == 300:
            first_images = images[:5]
    print(f"test set: {len(papers)} papers, {sum(len(p.pages) for p in papers)} pages", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _gguf, key = prepare_data_dir(tmp, "documents")
        install_bundled(ModelStore(data_dir / "models"), frozenset({args.model}))
        env = {"MOLTBOT_MODELS": json.dumps([args.model, MINILM])}
        with running_server(data_dir, env) as server:
            server.wait_until("/readyz", 200, time.monotonic() + START_TIMEOUT_S)
            rows = run_server_set(server, key, papers, args.dump)

    print()
    header = (
        f"{'set':<14}{'papers':>7}{'pages':>6}{'s/page':>8}{'extract s':>10}{'preproc s':>10}{'summary s':>10}"
        f"{'e2e s/10p':>10}{'cpu s/page':>11}{'char acc':>9}{'min acc':>8}{'peak RSS MB':>12}{'facts':>7}"
        f"{'invented':>9}{'ent P':>7}{'ent R':>7}{'ent F1':>7}{'m/d P':>7}{'rel P':>7}{'rel R':>7}{'rel F1':>7}"
    )
    print(header)
    print("-" * len(header))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["paper"].rsplit("-", 1)[0], []).append(row)
    for name, members in groups.items():
        pages = sum(r["pages"] for r in members)
        print(
            f"{name:<14}{len(members):>7}{pages:>6}"
            f"{statistics.mean(r['page_s'] for r in members):>8.2f}"
            f"{statistics.mean(r['extract_s'] for r in members):>10.1f}"
            f"{statistics.mean(r['preprocess_s'] for r in members):>10.2f}"
            f"{statistics.mean(r['summarize_s'] for r in members):>10.1f}"
            f"{statistics.mean(r['end_to_end_s'] / r['pages'] * 10 for r in members):>10.1f}"
            f"{sum(r['worker_cpu_s'] for r in members) / pages:>11.2f}"
            f"{statistics.mean(r['accuracy'] for r in members):>9.4f}"
            f"{min(r['accuracy_min'] for r in members):>8.4f}"
            f"{max(r['worker_peak_rss_mb'] for r in members):>12.0f}"
            f"{_mean_or_dash([r['fact_recall'] for r in members]):>7}"
            f"{sum(len(r['invented_numbers']) for r in members):>9}"
            f"{_mean_or_dash([r['entity_p'] for r in members]):>7}"
            f"{_mean_or_dash([r['entity_r'] for r in members]):>7}"
            f"{_mean_or_dash([f1(r['all_p'], r['entity_r']) for r in members]):>7}"
            f"{_mean_or_dash([r['named_p'] for r in members]):>7}"
            f"{_mean_or_dash([r['relation_p'] for r in members]):>7}"
            f"{_mean_or_dash([r['relation_r'] for r in members]):>7}"
            f"{_mean_or_dash([f1(r['relation_p'], r['relation_r']) for r in members]):>7}"
        )
    print()
    print("OCR path, the same 5 English 300-dpi pages (despeckled), one core each:")
    paths = compare_ocr_paths(first_images, papers[0].pages[:5], 300)
    base = paths[0][1]
    for name, seconds, accuracy in paths:
        print(f"  {name:<12} {seconds:6.2f} s/page  x{seconds / base:4.2f}  char accuracy {accuracy:.4f}")
    print("\nDeskew, 3 English 300-dpi pages per skew (median-filtered; Tesseract as is vs deskewed first):")
    print(f"  {'skew':>5} {'plain acc':>10} {'deskewed acc':>13} {'plain s':>8} {'deskewed s':>11}")
    for skew, plain, straight, plain_s, straight_s in compare_deskew(papers[0].pages[:3]):
        print(f"  {skew:>5.1f} {plain:>10.4f} {straight:>13.4f} {plain_s:>8.2f} {straight_s:>11.2f}")
    daily = 500 * statistics.mean(r["end_to_end_s"] / r["pages"] * 10 for r in rows if r["paper"].startswith("en"))
    print(f"\n500 ten-page English papers at this rate: {daily / 3600:.1f} h (one job at a time)")


if __name__ == "__main__":
    main()
