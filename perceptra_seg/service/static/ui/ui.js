// perceptra-seg click-to-segment page: talks to the /v1/ws session API of the server that serves it (protocol in
// docs/rest.md). No build step, no dependencies besides rle.js; everything it loads comes from the same origin.
"use strict";

(() => {
  const PALETTE = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
    [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40], [128, 0, 0]];
  const MASK_ALPHA = 128;
  const DRAG_MIN_PX = 5;

  const $ = (id) => document.getElementById(id);
  const stage = $("stage"), imageLayer = $("image-layer"), maskLayer = $("mask-layer"), markerLayer = $("marker-layer");
  const state = {
    socket: null, opening: null, imageBytes: null, bitmap: null, image: null,
    objects: new Map(), selected: 0, masksReceived: 0, lastReply: null, lastExport: null, drag: null, replayed: 0,
  };

  const colour = (k) => PALETTE[k % PALETTE.length];

  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  // ------------------------------------------------------------------ connection

  function socketUrl() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
  }

  function ensureSocket() {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) return Promise.resolve(state.socket);
    if (state.opening) return state.opening;
    state.opening = new Promise((resolve, reject) => {
      const socket = new WebSocket(socketUrl());
      socket.binaryType = "arraybuffer";
      socket.onopen = () => {
        const key = $("api-key").value.trim();
        if (key) socket.send(JSON.stringify({ type: "auth", api_key: key }));
        // A new session (after an idle close or a network drop) starts empty: send the image again, then each
        // object's clicks and box as one prompt (its earlier refinement steps are not replayed).
        if (state.image && state.imageBytes) {
          const objects = [...state.objects.entries()];
          socket.send(state.imageBytes);
          for (const [k, object] of objects) {
            socket.send(JSON.stringify({ type: "prompt", object: k, points: object.points,
              ...(object.box ? { box: object.box } : {}) }));
          }
          state.replayed = objects.length;
        }
        state.socket = socket;
        state.opening = null;
        setStatus("connected");
        resolve(socket);
      };
      socket.onmessage = (event) => onReply(JSON.parse(event.data));
      socket.onclose = (event) => {
        if (state.socket === socket) state.socket = null;
        if (state.opening) { state.opening = null; reject(new Error("connection failed")); }
        setStatus(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}); the next action reconnects`,
          event.code !== 1000);
      };
    });
    return state.opening;
  }

  async function send(message) {
    const socket = await ensureSocket();
    if (!state.image) {
      setStatus("open an image first", true);
      return;
    }
    socket.send(JSON.stringify(message));
  }

  async function sendImage() {
    const socket = await ensureSocket();
    setStatus("encoding the image…");
    socket.send(state.imageBytes);
  }

  // ------------------------------------------------------------------ replies

  function onReply(reply) {
    state.lastReply = reply;
    switch (reply.type) {
      case "authenticated":
        break;
      case "ready":
        state.image = { id: reply.image_id, width: reply.width, height: reply.height };
        state.objects.clear();
        if (!state.replayed) state.selected = 0;
        sizeLayers(reply.width, reply.height);
        redraw();
        setStatus(state.replayed ? `reconnected: re-creating ${state.replayed} objects from their clicks`
          : `ready: ${reply.width}×${reply.height}, encoded in ${Math.round(reply.latency_ms || 0)} ms`);
        state.replayed = 0;
        break;
      case "mask": {
        const mask = PerceptraRLE.decode(reply.rle);
        state.objects.set(reply.object, { mask, score: reply.score, area: reply.area, points: reply.points,
          box: reply.box });
        state.masksReceived += 1;
        redraw();
        setStatus(`object ${reply.object + 1}: score ${reply.score.toFixed(3)}, ${Math.round(reply.latency_ms || 0)} ms`);
        break;
      }
      case "deleted":
        state.objects.delete(reply.object);
        redraw();
        setStatus(`object ${reply.object + 1} removed`);
        break;
      case "reset":
        state.objects.clear();
        state.selected = 0;
        redraw();
        setStatus("all objects removed");
        break;
      case "export":
        state.lastExport = reply;
        download(new Blob([JSON.stringify(reply.annotations, null, 1)], { type: "application/json" }),
          "coco_results.json");
        setStatus(`exported ${reply.annotations.length} objects as COCO results`);
        break;
      case "error":
        setStatus(`${reply.code}: ${reply.message}`, true);
        break;
      default:
        setStatus(`unexpected reply ${reply.type}`, true);
    }
  }

  // ------------------------------------------------------------------ drawing

  function sizeLayers(width, height) {
    for (const canvas of [imageLayer, maskLayer, markerLayer]) {
      canvas.width = width;
      canvas.height = height;
    }
    stage.style.height = `${height + 4}px`;
    stage.style.width = `${width + 4}px`;
    if (state.bitmap) imageLayer.getContext("2d").drawImage(state.bitmap, 0, 0, width, height);
  }

  function redraw() {
    drawMasks();
    drawMarkers();
    listObjects();
  }

  function drawMasks() {
    const { width, height } = maskLayer;
    const ctx = maskLayer.getContext("2d");
    const pixels = ctx.createImageData(width, height);
    const ids = [...state.objects.keys()].sort((a, b) => a - b);
    for (const k of ids) {
      const { mask } = state.objects.get(k);
      if (mask.width !== width || mask.height !== height) continue;
      const [r, g, b] = colour(k);
      for (let i = 0; i < mask.data.length; i += 1) {
        if (!mask.data[i]) continue;
        const o = 4 * i;
        pixels.data[o] = r; pixels.data[o + 1] = g; pixels.data[o + 2] = b; pixels.data[o + 3] = MASK_ALPHA;
      }
    }
    ctx.putImageData(pixels, 0, 0);
  }

  function drawMarkers(preview = null) {
    const ctx = markerLayer.getContext("2d");
    ctx.clearRect(0, 0, markerLayer.width, markerLayer.height);
    for (const [k, object] of state.objects) {
      const [r, g, b] = colour(k);
      ctx.lineWidth = k === state.selected ? 3 : 1.5;
      ctx.strokeStyle = `rgb(${r},${g},${b})`;
      if (object.box) {
        const [x1, y1, x2, y2] = object.box;
        ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      }
      for (const p of object.points) {
        ctx.beginPath();
        ctx.arc(p.x, p.y, 5, 0, 2 * Math.PI);
        ctx.fillStyle = p.label ? "#19c24a" : "#e0302b";
        ctx.fill();
        ctx.lineWidth = 1.5;
        ctx.strokeStyle = "#fff";
        ctx.stroke();
      }
    }
    if (preview) {
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(preview.x1, preview.y1, preview.x2 - preview.x1, preview.y2 - preview.y1);
      ctx.setLineDash([]);
    }
  }

  function listObjects() {
    const list = $("objects");
    list.replaceChildren();
    const ids = [...state.objects.keys()];
    if (!ids.includes(state.selected)) ids.push(state.selected);
    for (const k of ids.sort((a, b) => a - b)) {
      const object = state.objects.get(k);
      const item = document.createElement("li");
      item.classList.toggle("selected", k === state.selected);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${colour(k).join(",")})`;
      const name = document.createElement("span");
      name.textContent = `object ${k + 1}${object ? "" : " (new: click the image)"}`;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = object ? object.score.toFixed(3) : "";
      item.append(swatch, name, score);
      item.addEventListener("click", () => { state.selected = k; redraw(); });
      list.append(item);
    }
  }

  function download(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // Label image: pixel value k + 1 for the k-th object in id order (0 = background), as a greyscale PNG.
  function exportPng() {
    if (!state.image) return;
    const { width, height } = state.image;
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const pixels = ctx.createImageData(width, height);
    for (let i = 3; i < pixels.data.length; i += 4) pixels.data[i] = 255;
    const ids = [...state.objects.keys()].sort((a, b) => a - b);
    ids.forEach((k, order) => {
      const { mask } = state.objects.get(k);
      const value = Math.min(255, order + 1);
      for (let i = 0; i < mask.data.length; i += 1) {
        if (mask.data[i]) pixels.data[4 * i] = pixels.data[4 * i + 1] = pixels.data[4 * i + 2] = value;
      }
    });
    ctx.putImageData(pixels, 0, 0);
    canvas.toBlob((blob) => download(blob, "masks.png"), "image/png");
    setStatus(`exported ${ids.length} masks as a label PNG (value = object order)`);
  }

  // ------------------------------------------------------------------ input

  async function openFile(file) {
    if (!file) return;
    state.imageBytes = await file.arrayBuffer();
    state.bitmap = await createImageBitmap(file);
    state.image = null;
    stage.classList.remove("empty");
    sizeLayers(state.bitmap.width, state.bitmap.height);
    state.objects.clear();
    redraw();
    try {
      await sendImage();
    } catch (error) {
      setStatus(`cannot reach the server: ${error.message}`, true);
    }
  }

  function imagePoint(event) {
    const rect = markerLayer.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (markerLayer.width / rect.width);
    const y = (event.clientY - rect.top) * (markerLayer.height / rect.height);
    return { x: Math.min(Math.max(x, 0), markerLayer.width - 1), y: Math.min(Math.max(y, 0), markerLayer.height - 1) };
  }

  function prompt(body) {
    send({ type: "prompt", object: state.selected, ...body });
  }

  markerLayer.addEventListener("contextmenu", (event) => event.preventDefault());
  markerLayer.addEventListener("mousedown", (event) => {
    state.drag = { start: imagePoint(event), button: event.button, clientX: event.clientX, clientY: event.clientY };
  });
  markerLayer.addEventListener("mousemove", (event) => {
    const drag = state.drag;
    if (!drag || drag.button !== 0) return;
    const p = imagePoint(event);
    drawMarkers({ x1: Math.min(drag.start.x, p.x), y1: Math.min(drag.start.y, p.y),
      x2: Math.max(drag.start.x, p.x), y2: Math.max(drag.start.y, p.y) });
  });
  markerLayer.addEventListener("mouseup", (event) => {
    const drag = state.drag;
    state.drag = null;
    if (!drag || !state.image) return;
    const moved = Math.hypot(event.clientX - drag.clientX, event.clientY - drag.clientY);
    if (drag.button === 0 && moved >= DRAG_MIN_PX) {
      const p = imagePoint(event);
      const box = [Math.min(drag.start.x, p.x), Math.min(drag.start.y, p.y), Math.max(drag.start.x, p.x),
        Math.max(drag.start.y, p.y)];
      drawMarkers();
      prompt({ box });
    } else if (drag.button === 0 || drag.button === 2) {
      prompt({ points: [{ ...drag.start, label: drag.button === 0 ? 1 : 0 }] });
    }
  });

  function newObject() {
    const ids = [...state.objects.keys()];
    state.selected = ids.length ? Math.max(...ids) + 1 : 0;
    if (state.objects.has(state.selected)) state.selected += 1;
    redraw();
  }

  const actions = {
    newObject,
    undo: () => send({ type: "undo" }),
    deleteObject: () => { if (state.objects.has(state.selected)) send({ type: "delete_object", object: state.selected }); },
    reset: () => send({ type: "reset" }),
    exportCoco: () => send({ type: "export" }),
    exportPng,
  };

  $("file").addEventListener("change", (event) => openFile(event.target.files[0]));
  $("new-object").addEventListener("click", actions.newObject);
  $("undo").addEventListener("click", actions.undo);
  $("delete").addEventListener("click", actions.deleteObject);
  $("reset").addEventListener("click", actions.reset);
  $("export-coco").addEventListener("click", actions.exportCoco);
  $("export-png").addEventListener("click", actions.exportPng);
  $("api-key").addEventListener("change", () => { if (state.socket) state.socket.close(1000, "new API key"); });

  stage.addEventListener("dragover", (event) => { event.preventDefault(); stage.classList.add("dragging"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (event) => {
    event.preventDefault();
    stage.classList.remove("dragging");
    openFile(event.dataTransfer.files[0]);
  });

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return;
    const key = event.key.toLowerCase();
    if ((event.ctrlKey || event.metaKey) && key === "z") { event.preventDefault(); actions.undo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (key === "n") actions.newObject();
    else if (key === "u") actions.undo();
    else if (key === "delete" || key === "backspace") actions.deleteObject();
    else if (key === "r") actions.reset();
    else if (key === "e") actions.exportCoco();
    else if (key === "p") actions.exportPng();
    else if (key === "o") $("file").click();
    else if (/^[1-9]$/.test(key)) { state.selected = Number(key) - 1; redraw(); }
    else return;
    event.preventDefault();
  });

  // Read by the browser test (tests/service/test_ui_browser.py) and handy in the console.
  window.perceptraUI = { state, actions, openFile };
  ensureSocket().catch(() => setStatus("cannot reach the server", true));
})();
