// Tiny DOM helpers: no framework, no innerHTML with data (text goes through textContent).

/**
 * h("button", { class: "btn", onclick: fn, dataset: { testid: "x" } }, "Label", child)
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") el.className = value;
    // Through the CSSOM: the Content-Security-Policy (style-src 'self') blocks style attributes.
    else if (key === "style") el.style.cssText = String(value);
    else if (key === "html") el.innerHTML = value; // only for our own static SVG icons
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Inline SVG from our own constant markup. */
export function icon(svg, cls = "icon") {
  const span = document.createElement("span");
  span.className = cls;
  span.setAttribute("aria-hidden", "true");
  span.innerHTML = svg;
  return span;
}
