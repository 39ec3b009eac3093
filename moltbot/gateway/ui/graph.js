// The knowledge graph page: search entities (/v1/graph/nodes), show a node's neighbourhood drawn with the
// vendored Cytoscape.js, and its relations with where each was read (document, page). Names come from
// documents and are untrusted: they reach the DOM only through textContent and Cytoscape's labels.
"use strict";

const KEY = "moltbot.key";
const $ = (id) => document.getElementById(id);
const COLORS = { document: "#555", person: "#2b6cb0", organization: "#2f855a", place: "#b7791f", method: "#6b46c1", dataset: "#c53030" };
let graph = null;

function key() { return sessionStorage.getItem(KEY); }

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${key()}` } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { const data = await response.json(); message = (data.error && data.error.message) || message; } catch (_) { /* not JSON */ }
    if (response.status === 401) signOut();
    throw new Error(message);
  }
  return response.json();
}

function show(error) { $("error").textContent = error ? error.message : ""; }

function signOut() {
  sessionStorage.removeItem(KEY);
  $("app").hidden = true; $("signin").hidden = false;
}

function item(text, onClick) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button"; button.className = "quiet"; button.textContent = text;
  button.addEventListener("click", onClick);
  li.append(button);
  return li;
}

async function search(event) {
  if (event) event.preventDefault();
  show(null);
  const params = new URLSearchParams({ q: $("query").value, limit: "50" });
  if ($("type").value) params.set("type", $("type").value);
  try {
    const found = await api(`/v1/graph/nodes?${params}`);
    $("results").replaceChildren(...found.data.map((node) => item(`${node.name} · ${node.type} (${node.degree})`, () => open(node.id))));
    if (!found.data.length) $("results").replaceChildren(item("nothing found", () => {}));
  } catch (error) { show(error); }
}

async function open(nodeId) {
  show(null);
  try {
    const node = await api(`/v1/graph/nodes/${encodeURIComponent(nodeId)}`);
    const names = new Map([[node.id, node], ...node.neighbours.map((n) => [n.id, n])]);
    const elements = [...names.values()].map((n) => ({ data: { id: n.id, label: n.name, type: n.type } }));
    for (const edge of node.edges) {
      if (names.has(edge.source) && names.has(edge.target)) {
        elements.push({ data: { id: edge.id, source: edge.source, target: edge.target, label: edge.relation } });
      }
    }
    graph.elements().remove();
    graph.add(elements);
    graph.layout({ name: "concentric", concentric: (n) => (n.id() === node.id ? 2 : 1), levelWidth: () => 1, animate: false, fit: true, padding: 40 }).run();
    graph.$id(node.id).select();
    const details = $("details");
    const heading = document.createElement("h2"); heading.textContent = `${node.name} (${node.type})`;
    const list = document.createElement("ul");
    for (const edge of node.edges.slice(0, 100)) {
      const other = names.get(edge.source === node.id ? edge.target : edge.source);
      const where = edge.provenance.page ? `page ${edge.provenance.page}` : "";
      const li = document.createElement("li");
      li.textContent = `${edge.source === node.id ? "→" : "←"} ${edge.relation} ${other ? other.name : "?"} ${where}`;
      list.append(li);
    }
    details.replaceChildren(heading, list);
  } catch (error) { show(error); }
}

function start() {
  $("signin").hidden = true; $("app").hidden = false;
  graph = cytoscape({
    container: $("canvas"),
    minZoom: 0.2,
    maxZoom: 1.5, // a neighbourhood of two nodes is not blown up to the whole canvas
    style: [
      { selector: "node", style: { label: "data(label)", "font-size": 10, "background-color": (n) => COLORS[n.data("type")] || "#888", width: 18, height: 18 } },
      { selector: "node:selected", style: { "border-width": 3, "border-color": "#000" } },
      { selector: "edge", style: { label: "data(label)", "font-size": 8, width: 1, "curve-style": "bezier", "target-arrow-shape": "triangle" } },
    ],
  });
  window.moltbotGraph = graph; // for tests and the console
  search();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    start();
  });
  $("search").addEventListener("submit", search);
  $("signout").addEventListener("click", signOut);
  if (key()) start(); else { $("signin").hidden = false; }
});
