// Draws the network sample from /v1/graph/view with vis-network (vendored, no CDN) and wires the controls.
// `window.dashboard` reports what was drawn, so the browser test can check the page rather than trust it.
(function () {
  "use strict";

  var SEGMENTS = {
    influencer: { label: "Influencer", color: "#d55e00", shape: "star" },
    prosumer: { label: "Prosumer", color: "#0072b2", shape: "diamond" },
    advocate: { label: "Advocate", color: "#009e73", shape: "triangle" },
    passive: { label: "Passive", color: "#8a94a3", shape: "dot" },
    do_not_ask: { label: "Do not ask", color: "#cc79a7", shape: "square" },
  };
  var NOT_ANALYSED = { label: "Not analysed yet", color: "#d5dae1", shape: "dot" };
  // Tableau 10: distinct hues for the ten largest communities in view; the rest share one grey.
  var COMMUNITY_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#79706e"];
  var OTHER_COMMUNITY = "#cbd5e1";

  var state = { dashboard: { ready: false, nodesDrawn: 0, edgesDrawn: 0, error: null, ranked_by: null, highlighted: null } };
  window.dashboard = state.dashboard;

  var container = document.getElementById("network");
  if (!container) { return; }
  var statusEl = document.getElementById("network-status");
  var limitEl = document.getElementById("network-limit");
  var highlightEl = document.getElementById("network-highlight");
  var legendSegments = document.getElementById("legend-segments");
  var legendCommunities = document.getElementById("legend-communities");
  var detailEmpty = document.getElementById("node-detail-empty");
  var detailBody = document.getElementById("node-detail-body");

  var network = null;
  var nodes = null;
  var edges = null;
  var view = null;
  var communityColour = {};
  var colourBy = "segment";
  var highlight = "";
  var FADED = { background: "#eef1f5", border: "#c3cad5", font: "#9aa3b0" };

  function segmentOf(node) { return (node.segment && SEGMENTS[node.segment]) || NOT_ANALYSED; }

  function fmt(value) {
    if (value === null || value === undefined) { return "–"; }
    return Number(value).toPrecision(3).replace(/\.?0+$/, "").replace(/\.?0+e/, "e");
  }

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.setAttribute("role", isError ? "alert" : "status");
  }

  function tooltip(node) {
    var box = document.createElement("div");
    var lines = [
      [node.label, true],
      [node.label !== node.id ? node.id : null, false],
      [segmentOf(node).label, false],
      [node.community !== null ? "Community " + node.community : null, false],
      [node.influence !== null ? "Influence " + fmt(node.influence) : null, false],
      [node.degree + (node.degree === 1 ? " link" : " links") + " in this view", false],
    ];
    lines.forEach(function (pair) {
      if (!pair[0]) { return; }
      var line = document.createElement(pair[1] ? "strong" : "div");
      line.textContent = pair[0];
      box.appendChild(line);
      if (pair[1]) { box.appendChild(document.createElement("br")); }
    });
    return box;
  }

  function assignCommunityColours(list) {
    var sizes = {};
    list.forEach(function (n) { if (n.community !== null) { sizes[n.community] = (sizes[n.community] || 0) + 1; } });
    var ranked = Object.keys(sizes).sort(function (a, b) { return sizes[b] - sizes[a] || Number(a) - Number(b); });
    communityColour = {};
    ranked.forEach(function (c, i) { communityColour[c] = i < COMMUNITY_COLOURS.length ? COMMUNITY_COLOURS[i] : OTHER_COMMUNITY; });
    legendCommunities.textContent = "";
    ranked.slice(0, COMMUNITY_COLOURS.length).forEach(function (c) {
      legendCommunities.appendChild(legendItem(communityColour[c], "Community " + c + " (" + sizes[c] + ")"));
    });
    if (ranked.length > COMMUNITY_COLOURS.length) {
      legendCommunities.appendChild(legendItem(OTHER_COMMUNITY, (ranked.length - COMMUNITY_COLOURS.length) + " smaller communities"));
    }
    addCommunityOptions(ranked, sizes);
    if (!ranked.length) {
      var none = document.createElement("li");
      none.textContent = "No communities yet: run an analysis.";
      legendCommunities.appendChild(none);
    }
  }

  function legendItem(colour, text) {
    var li = document.createElement("li");
    var mark = document.createElement("span");
    mark.className = "legend__mark legend__mark--community";
    mark.style.background = colour;
    mark.setAttribute("aria-hidden", "true");
    li.appendChild(mark);
    li.appendChild(document.createTextNode(text));
    return li;
  }

  // "segment:influencer" or "community:3"; an empty value highlights everyone.
  function highlighted(node) {
    if (!highlight) { return true; }
    var parts = highlight.split(":");
    if (parts[0] === "segment") { return node.segment === parts[1]; }
    return node.community !== null && String(node.community) === parts[1];
  }

  function addCommunityOptions(ranked, sizes) {
    Array.prototype.slice.call(highlightEl.querySelectorAll("option[data-community]")).forEach(function (o) { o.remove(); });
    ranked.slice(0, COMMUNITY_COLOURS.length).forEach(function (c) {
      var option = document.createElement("option");
      option.value = "community:" + c;
      option.dataset.community = c;
      option.textContent = "Community " + c + " (" + sizes[c] + ")";
      highlightEl.appendChild(option);
    });
    if (highlight && !Array.prototype.some.call(highlightEl.options, function (o) { return o.value === highlight; })) {
      highlight = "";
    }
    highlightEl.value = highlight;
  }

  function fillColour(node) {
    if (colourBy === "community") {
      return node.community !== null ? communityColour[node.community] : NOT_ANALYSED.color;
    }
    return segmentOf(node).color;
  }

  function toVisNode(node) {
    var seg = segmentOf(node);
    var lit = highlighted(node);
    var fill = lit ? fillColour(node) : FADED.background;
    var border = lit ? "#1a2230" : FADED.border;
    var size = node.influence !== null ? node.influence : node.degree + 1;
    return {
      id: node.id,
      label: node.label,
      value: size,
      shape: seg.shape,
      title: tooltip(node),
      font: { color: lit ? "#1a2230" : FADED.font },
      color: { background: fill, border: border, highlight: { background: fill, border: "#b45309" },
        hover: { background: fill, border: "#b45309" } },
      borderWidth: 1,
      borderWidthSelected: 3,
    };
  }

  function toVisEdge(edge, i) {
    var referred = edge.type === "REFERRED";
    return {
      id: "e" + i,
      from: edge.source,
      to: edge.target,
      arrows: { to: { enabled: true, scaleFactor: 0.45 } },
      dashes: !referred,
      width: referred ? 1.6 : 1,
      color: { color: referred ? "#475569" : "#94a3b8", highlight: "#b45309", hover: "#b45309", opacity: referred ? 0.9 : 0.7 },
      title: (referred ? "Referred (" : "Influences (") + edge.label + ")",
    };
  }

  var OPTIONS = {
    autoResize: true,
    nodes: {
      font: { size: 13, color: "#1a2230", strokeWidth: 3, strokeColor: "#ffffff" },
      scaling: { min: 7, max: 34, label: { enabled: true, min: 11, max: 22, drawThreshold: 6, maxVisible: 26 } },
    },
    edges: { smooth: false, selectionWidth: 1.5, hoverWidth: 0.5 },
    interaction: {
      hover: true,
      tooltipDelay: 120,
      keyboard: { enabled: true, bindToWindow: false, speed: { x: 12, y: 12, zoom: 0.03 } },
      multiselect: false,
      navigationButtons: false,
    },
    physics: {
      solver: "forceAtlas2Based",
      forceAtlas2Based: { gravitationalConstant: -45, centralGravity: 0.012, springLength: 70, springConstant: 0.08, avoidOverlap: 0.4 },
      stabilization: { enabled: true, iterations: 300, updateInterval: 50, fit: true },
    },
  };

  function draw(data) {
    view = data;
    assignCommunityColours(data.nodes);
    nodes = new vis.DataSet(data.nodes.map(toVisNode));
    edges = new vis.DataSet(data.edges.map(toVisEdge));
    state.dashboard.ready = false;
    if (network === null) {
      network = new vis.Network(container, { nodes: nodes, edges: edges }, OPTIONS);
      window.dashboardNetwork = network; // for tests and the console; window.dashboard stays plain data
      network.on("afterDrawing", onDrawn);
      network.on("stabilizationIterationsDone", function () {
        network.setOptions({ physics: { enabled: false } });
        network.fit();
      });
      network.on("selectNode", function (params) { showDetail(params.nodes[0]); });
      network.on("deselectNode", function () { clearDetail(); });
    } else {
      network.setOptions({ physics: { enabled: true } });
      network.setData({ nodes: nodes, edges: edges });
    }
    setStatus(statusText(data), false);
  }

  function statusText(data) {
    var shown = data.nodes.length;
    if (!shown) { return "No customers yet. Import customers and their ties to see the network."; }
    return "Showing " + shown.toLocaleString() + " of " + data.total_customers.toLocaleString() +
      " customers and " + data.edges.length.toLocaleString() + " links among them, ranked by " +
      (data.ranked_by === "influence" ? "influence score" : "number of links (no analysis yet)") + ".";
  }

  function onDrawn() {
    var drawn = network.body.nodeIndices.length;
    var drawnEdges = network.body.edgeIndices.length;
    state.dashboard.nodesDrawn = drawn;
    state.dashboard.edgesDrawn = drawnEdges;
    state.dashboard.ranked_by = view ? view.ranked_by : null;
    state.dashboard.ready = true;
    container.dataset.nodesDrawn = String(drawn);
    container.dataset.edgesDrawn = String(drawnEdges);
  }

  function problemText(response, body) {
    if (body && body.detail) { return body.detail; }
    return "HTTP " + response.status;
  }

  function load() {
    var limit = Number(limitEl.value) || 200;
    setStatus("Loading the network…", false);
    return fetch("/v1/graph/view?limit=" + limit, { headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () { return null; }).then(function (body) {
          if (!response.ok) { throw new Error(problemText(response, body)); }
          return body;
        });
      })
      .then(draw)
      .catch(function (err) {
        state.dashboard.error = String(err.message || err);
        setStatus("Could not load the network: " + state.dashboard.error, true);
      });
  }

  function clearDetail() {
    detailBody.hidden = true;
    detailBody.textContent = "";
    detailEmpty.hidden = false;
  }

  function addRow(dt, dd, cls) {
    var t = document.createElement("dt");
    t.textContent = dt;
    var d = document.createElement("dd");
    d.textContent = dd;
    if (cls) { t.className = cls; d.className = cls; }
    detailBody.appendChild(t);
    detailBody.appendChild(d);
  }

  function showDetail(id) {
    var node = view && view.nodes.find(function (n) { return n.id === id; });
    detailBody.textContent = "";
    detailEmpty.hidden = true;
    detailBody.hidden = false;
    addRow("Customer", node ? node.label : id);
    addRow("Id", id);
    if (node) {
      addRow("Segment", segmentOf(node).label);
      addRow("Community", node.community !== null ? String(node.community) : "–");
      addRow("Influence", fmt(node.influence));
    }
    fetch("/v1/customers/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (detail) {
        if (detail && detail.analysis && detail.analysis.explanation) {
          addRow("Why", detail.analysis.explanation, "why");
        }
      })
      .catch(function () { /* the summary above is still right; the explanation is a bonus */ });
  }

  function focusNode(id) {
    if (!network || !nodes.get(id)) { return; }
    network.selectNodes([id]);
    network.focus(id, { scale: Math.max(network.getScale(), 1.2), animation: { duration: 400, easingFunction: "easeInOutQuad" } });
    showDetail(id);
    container.scrollIntoView({ behavior: "smooth", block: "center" });
  }

  function zoom(factor) {
    if (!network) { return; }
    network.moveTo({ scale: network.getScale() * factor, animation: { duration: 200 } });
  }

  document.getElementById("zoom-in").addEventListener("click", function () { zoom(1.3); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom(1 / 1.3); });
  document.getElementById("zoom-fit").addEventListener("click", function () { if (network) { network.fit({ animation: { duration: 300 } }); } });
  limitEl.addEventListener("change", load);
  highlightEl.addEventListener("change", function () {
    highlight = highlightEl.value;
    if (view) {
      nodes.update(view.nodes.map(toVisNode));
      var lit = view.nodes.filter(highlighted).length;
      state.dashboard.highlighted = lit;
      setStatus(highlight ? lit + " of " + view.nodes.length + " customers in view highlighted ("
        + highlightEl.options[highlightEl.selectedIndex].text + ")." : statusText(view), false);
    }
  });
  Array.prototype.forEach.call(document.querySelectorAll('input[name="colour"]'), function (radio) {
    radio.addEventListener("change", function () {
      colourBy = radio.value;
      legendSegments.classList.toggle("legend--shapes-only", colourBy === "community");
      legendCommunities.hidden = colourBy !== "community";
      if (view) { nodes.update(view.nodes.map(toVisNode)); }
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("[data-focus-node]"), function (button) {
    button.addEventListener("click", function () { focusNode(button.getAttribute("data-focus-node")); });
  });

  if (typeof vis === "undefined") {
    state.dashboard.error = "the network library did not load";
    setStatus("Could not load the network drawing library.", true);
    return;
  }
  load();
})();
