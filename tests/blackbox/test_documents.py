"""/v1/documents through the real server with real Tesseract: upload a generated scanned PDF, follow
its job, read its pages and chunks; bad files; owner isolation; a server killed mid-job resumes."""

from __future__ import annotations

import io
import json
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import networkx
import pytest

from tests.helpers import (
    EMBEDDING_MODEL,
    INSTRUCT_MODEL,
    START_TIMEOUT_S,
    Server,
    create_key,
    require_tool,
    run_cli,
    running_server,
)
from tests.scans import page_image, scanned_pdf

PAPER = [
    "Alice Smith of the Massachusetts Institute of Technology evaluated the transformer on the GLUE "
    "benchmark and reported an accuracy of 91.4 percent.\n\nThe method was compared with the baseline "
    "of Bob Jones.",
    "The second page describes the ImageNet dataset and the training schedule of forty epochs.",
    "The third page concludes that larger models need more data.",
]
JOB_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    require_tool("tesseract")  # Debian's tesseract-ocr: its language data is what the OCR reads
    env = {"MOLTBOT_DOCUMENT_PAGE_TIMEOUT_S": "60", "MOLTBOT_DOCUMENT_MAX_PAGES": "200"}
    with running_server(make_data_dir("documents"), env) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(create_key(server.data_dir, "documents", name="reader")) as http:
        yield http


def paper_pdf(pages: list[str], **degrade: Any) -> bytes:
    return scanned_pdf([page_image(text, seed=i, **degrade) for i, text in enumerate(pages)])


def upload(client: httpx.Client, data: bytes, name: str = "paper.pdf", **fields: str) -> httpx.Response:
    return client.post("/v1/documents", files={"file": (name, data, "application/pdf")}, data=fields)


def wait_done(client: httpx.Client, document_id: str) -> dict[str, Any]:
    """Follow the job's server-sent events to its end; the last event's card."""
    last: dict[str, Any] = {}
    kinds = []
    with client.stream("GET", f"/v1/documents/{document_id}/events", timeout=JOB_TIMEOUT_S) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
            elif line.startswith("data: "):
                last = json.loads(line.removeprefix("data: "))
    assert kinds and kinds[-1] == "document.done" and set(kinds[:-1]) <= {"document.progress"}, kinds
    return last


def test_a_scanned_paper_is_read_page_by_page_and_chunked(client: httpx.Client) -> None:
    response = upload(client, paper_pdf(PAPER, skew_degrees=0.8, blur=0.5, noise=0.003))
    assert response.status_code == 202, response.text
    card = response.json()
    assert card["status"] == "queued" and card["pages"] == 3 and card["media_type"] == "application/pdf"
    assert response.headers["location"] == f"/v1/documents/{card['id']}"
    done = wait_done(client, card["id"])
    assert done["status"] == "done" and done["pages_done"] == 3 and done["pages_failed"] == 0
    assert done["language"] == "en" and done["finished_at"] >= done["created_at"]

    detail = client.get(f"/v1/documents/{card['id']}").json()
    assert [p["method"] for p in detail["page_results"]] == ["ocr"] * 3
    assert all(p["confidence"] > 0.7 for p in detail["page_results"])
    pages = client.get(f"/v1/documents/{card['id']}/pages").json()["data"]
    text = " ".join(" ".join(p["text"].split()) for p in pages)
    for words in ("Massachusetts Institute of Technology", "91.4 percent", "ImageNet dataset", "forty epochs"):
        assert words in text, text
    chunks = client.get(f"/v1/documents/{card['id']}/chunks").json()["data"]
    assert {c["page"] for c in chunks} == {1, 2, 3} and all(c["tokens"] <= 256 for c in chunks)
    listed = client.get("/v1/documents").json()["data"]
    assert card["id"] in [d["id"] for d in listed]
    # The test server's chat model is a base model: the summary stage says why it made none.
    summary = client.get(f"/v1/documents/{card['id']}/summary").json()
    assert "no chat template" in summary["error"]

    assert client.delete(f"/v1/documents/{card['id']}").status_code == 200
    for path in ("", "/pages", "/chunks", "/events"):
        assert client.get(f"/v1/documents/{card['id']}{path}").status_code == 404


def text_layer_pdf(lines: list[str]) -> bytes:
    """A born-digital PDF: one page whose text is set in Helvetica (a text layer, no image)."""
    import pikepdf

    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
    )
    shown = b" ".join(b"(" + line.encode("latin-1") + b") Tj 0 -16 Td" for line in lines)
    content = b"BT /F1 12 Tf 72 720 Td " + shown + b" ET"
    page = pikepdf.Dictionary(
        Type=pikepdf.Name.Page,
        MediaBox=[0, 0, 612, 792],
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
        Contents=pdf.make_stream(content),
    )
    pdf.pages.append(pikepdf.Page(page))
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_a_pdf_text_layer_skips_ocr_and_text_files_are_accepted(client: httpx.Client) -> None:
    born_digital = text_layer_pdf(["Alice Smith met Bob Jones in Boston.", "They wrote about graph databases."])
    response = upload(client, born_digital, "digital.pdf")
    assert response.status_code == 202, response.text
    done = wait_done(client, response.json()["id"])
    pages = client.get(f"/v1/documents/{done['id']}/pages").json()["data"]
    assert [p["method"] for p in pages] == ["text"] and pages[0]["confidence"] == 1.0
    assert "Alice Smith met Bob Jones in Boston." in pages[0]["text"]

    text = "Plain text notes.\n\nAlice Smith met Bob Jones in Boston.\fA second page."
    response = client.post("/v1/documents", files={"file": ("notes.txt", text.encode(), "text/plain")})
    assert response.status_code == 202, response.text
    done = wait_done(client, response.json()["id"])
    assert done["status"] == "done" and done["pages"] == 2 and done["media_type"] == "text/plain"
    pages = client.get(f"/v1/documents/{done['id']}/pages").json()["data"]
    assert [p["method"] for p in pages] == ["text", "text"] and "Alice Smith met Bob Jones" in pages[0]["text"]


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` (1-bit gray) with almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def many_pages(count: int) -> bytes:
    import pypdfium2

    pdf = pypdfium2.PdfDocument.new()
    for _ in range(count):
        pdf.new_page(612, 792)
    out = io.BytesIO()
    pdf.save(out)
    pdf.close()
    return out.getvalue()


def encrypted_pdf() -> bytes:
    import pikepdf

    source = pikepdf.open(io.BytesIO(many_pages(1)))
    out = io.BytesIO()
    source.save(out, encryption=pikepdf.Encryption(user="secret", owner="owner"))
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("empty.pdf", lambda: b"", "empty"),
        ("noise.bin", lambda: bytes(range(256)) * 64, "not a supported file"),
        ("truncated.pdf", lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog", "damaged or not a PDF"),
        ("locked.pdf", encrypted_pdf, "encrypted"),
        ("huge.png", lambda: png_header(20_000, 20_000), "megapixels"),
        ("long.pdf", lambda: many_pages(10_000), "10000 pages; at most 200"),
    ],
)
def test_bad_files_are_400s_and_nothing_is_stored(
    client: httpx.Client, name: str, make: Callable[[], bytes], words: str
) -> None:
    before = len(client.get("/v1/documents").json()["data"])
    started = time.monotonic()
    response = upload(client, make(), name)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["param"] == "file" and error["code"] == "invalid_document"
    assert "/" not in error["message"] and "Traceback" not in response.text
    assert time.monotonic() - started < 60
    assert len(client.get("/v1/documents").json()["data"]) == before


def test_upload_limits_and_fields(client: httpx.Client, server: Server) -> None:
    assert upload(client, b"text", languages="klingon").json()["error"]["param"] == "languages"
    assert upload(client, b"text", pipeline="nope").json()["error"]["param"] == "pipeline"
    assert client.post("/v1/documents", data={"pipeline": "documents"}).status_code == 400  # no file
    # Without a key, a large body is refused at the general limit before anything reads it.
    anonymous = httpx.post(f"{server.base_url}/documents", content=b"x" * (2 << 20), verify=server.verify, timeout=60)
    assert anonymous.status_code in (401, 413)


def test_another_key_does_not_see_a_document(client: httpx.Client, server: Server) -> None:
    mine = upload(client, b"private notes about a merger").json()
    with server.client(create_key(server.data_dir, "documents", name="other")) as other:
        for path in ("", "/pages", "/chunks", "/events"):
            assert other.get(f"/v1/documents/{mine['id']}{path}").status_code == 404
        assert other.delete(f"/v1/documents/{mine['id']}").status_code == 404
        assert mine["id"] not in [d["id"] for d in other.get("/v1/documents").json()["data"]]
    assert wait_done(client, mine["id"])["status"] == "done"
    raw = (server.data_dir / "moltbot.db").read_bytes()
    assert b"merger" not in raw and b"paper.pdf" not in raw  # content and names are encrypted at rest


def test_a_server_killed_mid_job_resumes_without_repeating_pages(make_data_dir: Callable[..., Path]) -> None:
    require_tool("tesseract")
    data_dir = make_data_dir("documents-crash")
    pages = [f"Page {n} of the long report discusses topic number {n} in detail." for n in range(1, 9)]
    pdf = paper_pdf(pages)
    with running_server(data_dir) as first:
        first.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        key = create_key(data_dir, "documents", name="crash")
        with first.client(key) as client:
            card = upload(client, pdf).json()
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while client.get(f"/v1/documents/{card['id']}").json()["pages_done"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        first.process.kill()  # SIGKILL: no shutdown, the job is cut wherever it is
        first.process.wait(timeout=30)
    with running_server(data_dir) as second, second.client(key) as client:
        done = wait_done(client, card["id"])
        assert done["status"] == "done" and done["pages_done"] == 8 and done["pages_failed"] == 0
        texts = client.get(f"/v1/documents/{card['id']}/pages").json()["data"]
        assert [p["page"] for p in texts] == list(range(1, 9))
        assert all(f"topic number {p['page']}" in " ".join(p["text"].split()) for p in texts)


@pytest.fixture(scope="module")
def instruct(make_data_dir: Callable[..., Path]) -> Iterator[httpx.Client]:
    """A server whose chat model is the bundled 0.5B instruct model: summaries and graph facts."""
    env = {"MOLTBOT_MODELS": json.dumps([INSTRUCT_MODEL, EMBEDDING_MODEL])}
    with running_server(make_data_dir("documents-instruct"), env) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with srv.client(create_key(srv.data_dir, "documents", name="instruct")) as client:
            yield client


def upload_text(client: httpx.Client, pages: list[str], name: str = "paper.txt") -> dict[str, Any]:
    response = client.post("/v1/documents", files={"file": (name, "\f".join(pages).encode(), "text/plain")})
    assert response.status_code == 202, response.text
    done = wait_done(client, response.json()["id"])
    assert done["status"] == "done", done
    return done


def test_a_summary_by_the_instruct_model_cites_its_pages(instruct: httpx.Client) -> None:
    pages = [
        "Sparse Retrieval for Scientific Papers\n\nAlice Smith and Bob Jones\n\nWe present a sparse retrieval "
        "model. On the SciDocs benchmark it reaches a recall of 84.2 percent, 6.5 points above BM25.",
        "The model is trained for 12 epochs on 3 million abstracts. Training takes 9 hours on one GPU. "
        "An ablation shows that query expansion adds 2.1 points of recall.",
    ]
    done = upload_text(instruct, pages)
    summary = instruct.get(f"/v1/documents/{done['id']}/summary").json()
    assert "error" not in summary, summary
    assert summary["model"] == INSTRUCT_MODEL and summary["windows"] == 1
    assert summary["key_findings"] and summary["abstract"], json.dumps(summary)
    for finding in summary["key_findings"]:
        for number in re.findall(r"\d+(?:\.\d+)?", finding["text"]):
            assert any(number in pages[page - 1] for page in finding["pages"]), (finding, pages)
    for number in re.findall(r"\d+(?:\.\d+)?", summary["abstract"]):
        assert number in " ".join(pages), summary["abstract"]


def test_a_scanned_paper_goes_from_ocr_to_summary_graph_and_answers(instruct: httpx.Client) -> None:
    pages = [
        "Sparse Retrieval for Scanned Archives\n\nMarta Kowalski, Tomas Lindqvist\n\nTsinghua University\n\n"
        "Abstract. We apply gradient boosting to the SciDocs benchmark. Our model reaches a recall of 84.2 "
        "percent and improves on the best previous result by 6.5 points.",
        "Marta Kowalski trained the gradient boosting model on SciDocs for 12 epochs. An ablation shows that "
        "query expansion adds 2.1 points of recall.",
    ]
    response = instruct.post(
        "/v1/documents",
        files={"file": ("scan.pdf", paper_pdf(pages, skew_degrees=4.0, noise=0.002), "application/pdf")},
    )
    assert response.status_code == 202, response.text
    done = wait_done(instruct, response.json()["id"])
    assert done["status"] == "done" and done["pages_failed"] == 0, done
    read = instruct.get(f"/v1/documents/{done['id']}/pages").json()["data"]
    assert [p["method"] for p in read] == ["ocr", "ocr"] and "84.2 percent" in " ".join(read[0]["text"].split())
    summary = instruct.get(f"/v1/documents/{done['id']}/summary").json()
    assert "error" not in summary and summary["title"] and summary["abstract"], summary
    assert {"Marta Kowalski", "Tomas Lindqvist"} <= set(summary["authors"]), summary["authors"]
    texts = {n: " ".join(p["text"].split()) for n, p in enumerate(read, start=1)}
    for finding in summary["key_findings"]:  # the document's own sentences, on the pages they cite
        assert all(finding["text"] in texts[page] for page in finding["pages"]), finding
    assert any("84.2" in f["text"] for f in summary["key_findings"]), summary["key_findings"]
    graph = instruct.get("/v1/graph/subgraph", params={"document_id": done["id"]}).json()
    names = {n["id"]: (n["type"], n["name"]) for n in graph["nodes"]}
    assert ("organization", "Tsinghua University") in names.values()
    relations = {(e["relation"], names[e["source"]][1], names[e["target"]][1]) for e in graph["edges"]}
    assert any(r == "affiliated_with" and target == "Tsinghua University" for r, _, target in relations), relations
    assert any(r == "authored_by" and target == "Tomas Lindqvist" for r, _, target in relations), relations
    exported = instruct.get("/v1/graph/export", params={"format": "graphml", "document_id": done["id"]})
    assert exported.status_code == 200 and len(networkx.read_graphml(io.BytesIO(exported.content))) == len(names)
    answer = instruct.post(
        "/v1/documents/ask", json={"question": "What recall does the model reach?", "document_ids": [done["id"]]}
    ).json()
    assert answer["citations"] and answer["citations"][0]["document_id"] == done["id"], answer


def test_documents_share_entities_in_one_graph(instruct: httpx.Client) -> None:
    first = upload_text(
        instruct,
        [
            "Graph Methods\n\nIngrid Halvorsen, Stanford University\n\nIngrid Halvorsen studied graph attention "
            "networks in Boston and evaluated them on the Cora dataset."
        ],
        "first.txt",
    )
    second = upload_text(
        instruct,
        [
            "Retrieval at Scale\n\nCarlos Diaz, Stanford University\n\nCarlos Diaz thanks Ingrid Halvorsen for her "
            "advice. The work was done in Boston."
        ],
        "second.txt",
    )
    people = instruct.get("/v1/graph/nodes", params={"q": "ingrid halvorsen", "type": "person"}).json()["data"]
    assert len(people) == 1, people  # one node for both documents
    ingrid = people[0]
    detail = instruct.get(f"/v1/graph/nodes/{ingrid['id']}").json()
    documents = {e["provenance"]["document_id"] for e in detail["edges"]}
    assert documents == {first["id"], second["id"]}
    assert all(e["provenance"]["page"] == 1 for e in detail["edges"])
    nodes = {
        n["document_id"]: n["id"] for n in instruct.get("/v1/graph/nodes", params={"type": "document"}).json()["data"]
    }
    path = instruct.get("/v1/graph/path", params={"source": nodes[first["id"]], "target": nodes[second["id"]]}).json()
    assert path["length"] == 2 and path["nodes"][0]["type"] == "document" and path["nodes"][-1]["type"] == "document"

    exported = instruct.get("/v1/graph/export", params={"format": "graphml"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/graphml+xml")
    graph = networkx.read_graphml(io.BytesIO(exported.content))
    assert ingrid["id"] in graph and graph.nodes[ingrid["id"]]["type"] == "person"
    sub = instruct.get("/v1/graph/subgraph", params={"document_id": first["id"]}).json()
    assert {e["provenance"]["document_id"] for e in sub["edges"]} == {first["id"]}

    assert instruct.delete(f"/v1/documents/{second['id']}").status_code == 200
    both = {"format": "json", "document_id": [first["id"], second["id"]]}
    left = instruct.get("/v1/graph/export", params=both).json()
    assert {e["provenance"]["document_id"] for e in left["edges"]} == {first["id"]}
    assert nodes[second["id"]] not in {n["id"] for n in left["nodes"]}
    carlos = instruct.get("/v1/graph/nodes", params={"q": "carlos diaz"}).json()["data"]
    assert carlos == []  # only the deleted document had him: his node went with it
    assert instruct.get("/v1/graph/nodes/node_" + "0" * 24).status_code == 404
    assert instruct.get("/v1/graph/nodes", params={"type": "planet"}).status_code == 400


def test_questions_are_answered_from_the_documents_with_citations(instruct: httpx.Client) -> None:
    done = upload_text(
        instruct,
        [
            "Field Report\n\nThe survey team counted the birds on the island of Tavolara.",
            "On Tavolara the team counted 312 puffins and 45 gannets during the spring survey.",
        ],
        "report.txt",
    )
    asked = instruct.post("/v1/documents/ask", json={"question": "How many puffins were counted on Tavolara?"})
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert answer["found"] is True and answer["grounded"] is True and "312" in answer["answer"], answer
    assert answer["citations"], answer
    assert all(c["document_id"] == done["id"] for c in answer["citations"])
    assert 2 in {c["page"] for c in answer["citations"]} and "312 puffins" in answer["citations"][0]["excerpt"]

    unrelated = instruct.post("/v1/documents/ask", json={"question": "What is the boiling point of tungsten?"}).json()
    assert unrelated["found"] is False and unrelated["answer"] == "not found in the documents"
    assert unrelated["citations"] == []
    elsewhere = instruct.post(
        "/v1/documents/ask",
        json={"question": "How many puffins were counted on Tavolara?", "document_ids": ["doc_" + "0" * 24]},
    ).json()
    assert elsewhere["found"] is False  # only the documents named are searched
    bad = instruct.post("/v1/documents/ask", json={"question": "", "top_k": 50})
    assert bad.status_code == 400


def test_a_folder_is_ingested_once_by_the_cli(client: httpx.Client, server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First note about Lisbon.\fIts second page.")
    (folder / "sub" / "b.txt").write_text("Second note about Porto.")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog")
    (folder / "ignored.docx").write_bytes(b"not a supported suffix")
    key = create_key(server.data_dir, "documents", name="ingest")
    before = {d["id"] for d in client.get("/v1/documents", params={"limit": 200}).json()["data"]}
    first = run_cli(server.data_dir, "docs", "ingest", str(folder), "--key", key, "--quiet")
    assert first.returncode == 1, first.stderr  # one file refused
    assert "2 documents done, 0 failed, 1 refused" in first.stderr and "broken.pdf: refused (400)" in first.stderr
    with server.client(key) as mine:
        listed = mine.get("/v1/documents").json()["data"]
    assert sorted(d["name"] for d in listed) == ["a.txt", "b.txt"] and all(d["status"] == "done" for d in listed)
    again = run_cli(server.data_dir, "docs", "ingest", str(folder), "--key", key, "--quiet")
    assert "2 documents done, 0 failed, 1 refused" in again.stderr
    with server.client(key) as mine:
        assert len(mine.get("/v1/documents").json()["data"]) == 2  # nothing was sent twice
    assert before == {d["id"] for d in client.get("/v1/documents", params={"limit": 200}).json()["data"]}
