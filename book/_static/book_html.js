/* Display equations and text outputs fit the text column (book_html.css has the scroll boxes).
 *
 * MathJax 3 cannot break a display equation across lines. One wider than its box is set smaller,
 * down to MATH_MIN of MathJax's size; one still wider scrolls in its box.
 * A text output whose longest line is wider than its box is set smaller, down to TEXT_MIN; if it
 * is still too wide its lines wrap, where the box holds at least WRAP_CHARS characters a line,
 * and it scrolls in its box on a narrower screen, so that a printed table keeps its columns.
 * Each box is fitted again whenever its width changes (window, sidebar, a cell shown). */
(() => {
  "use strict";
  const MATH_MIN = 0.7;
  const TEXT_MIN = 0.85;
  const WRAP_CHARS = 60;

  const overflows = (el) => el.scrollWidth > el.clientWidth + 1;
  const px = (value) => parseFloat(value) || 0;

  function fitMath(box) {
    if (box.dataset.bookFontSize === undefined) box.dataset.bookFontSize = box.style.fontSize;
    box.style.fontSize = box.dataset.bookFontSize;
    box.classList.remove("book-scrolls");
    if (!overflows(box)) return;
    const size = px(getComputedStyle(box).fontSize);
    let scale = Math.max(MATH_MIN, (box.clientWidth - 2) / box.scrollWidth);
    for (let tries = 0; tries < 4; tries++) {
      box.style.fontSize = `${size * scale}px`;
      if (!overflows(box) || scale === MATH_MIN) break;
      scale = Math.max(MATH_MIN, scale * 0.98);
    }
    if (overflows(box)) box.classList.add("book-scrolls");
  }

  function fitText(pre) {
    pre.style.fontSize = "";
    pre.classList.remove("book-wrap");
    if (!overflows(pre)) return;
    const style = getComputedStyle(pre);
    const room = pre.clientWidth - px(style.paddingLeft) - px(style.paddingRight);
    const range = document.createRange();
    range.selectNodeContents(pre);
    const need = range.getBoundingClientRect().width;
    if (room <= 0 || need <= 0) return;
    if (room / need >= TEXT_MIN) {
      pre.style.fontSize = `${(px(style.fontSize) * room * 0.99) / need}px`;
      if (!overflows(pre)) return;
      pre.style.fontSize = "";
    }
    const longest = Math.max(...pre.textContent.split("\n").map((line) => line.length));
    if ((room * longest) / need >= WRAP_CHARS) pre.classList.add("book-wrap");
  }

  const widths = new WeakMap();
  const pending = new Set();
  function flush() {
    for (const el of pending) (el.matches("mjx-container") ? fitMath : fitText)(el);
    pending.clear();
  }
  // Fitted in the next frame, not in the observer's callback (no ResizeObserver loop).
  const observer = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const width = Math.round(entry.contentRect.width);
      if (width > 0 && widths.get(entry.target) !== width) {
        widths.set(entry.target, width);
        pending.add(entry.target);
      }
    }
    if (pending.size) requestAnimationFrame(flush);
  });
  const observe = (selector) => document.querySelectorAll(selector).forEach((el) => observer.observe(el));

  function start() {
    observe("div.cell_output pre");
    // an output folded into a dropdown is fitted when the reader opens it
    document.querySelectorAll("details").forEach((d) =>
      d.addEventListener("toggle", () => d.querySelectorAll("div.cell_output pre").forEach(fitText)),
    );
    const mathjax = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    if (mathjax) mathjax.then(() => observe("mjx-container[display='true']"));
  }
  if (document.readyState === "complete") start();
  else window.addEventListener("load", start);
})();
