// Our own small inline icons (24×24 grid, stroke = currentColor), drawn for this app.

const svg = (body) =>
  `<svg viewBox="0 0 24 24" width="20" height="20" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">${body}</svg>`;

// A leaf: two arcs meeting at the tips, a midrib and a stem.
export const LEAF = svg('<path d="M5 19C5 10 10 5 20 4c0 10-5 15-14 15"/><path d="M5 19 14 10"/>');
export const UPLOAD = svg('<path d="M4 16v3h16v-3"/><path d="M12 15V4"/><path d="m7 9 5-5 5 5"/>');
export const CHECK = svg('<path d="m5 12 5 5 9-10"/>');
export const ALERT = svg('<circle cx="12" cy="12" r="9"/><path d="M12 7v6"/><path d="M12 16.5v.5"/>');
export const CLOSE = svg('<path d="M6 6l12 12"/><path d="M18 6 6 18"/>');
export const BELL = svg('<path d="M5 17h14l-2-3V10a5 5 0 0 0-10 0v4z"/><path d="M10 20h4"/>');
export const BACK = svg('<path d="M15 5 8 12l7 7"/>');
export const IMAGE = svg('<rect x="3" y="4" width="18" height="16" rx="2"/><path d="m3 17 6-6 5 5 3-3 4 4"/><circle cx="16" cy="8.5" r="1.5"/>');
export const SPROUT = svg('<path d="M12 21v-9"/><path d="M12 12c0-4-3-6-7-6 0 4 3 6 7 6z"/><path d="M12 14c0-4 3-7 7-7 0 4-3 7-7 7z"/><path d="M7 21h10"/>');
export const LOGOUT = svg('<path d="M10 4H5v16h5"/><path d="M14 8l4 4-4 4"/><path d="M18 12H9"/>');
