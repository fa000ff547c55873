// COCO run-length encoding → mask, for drawing the server's masks (no dependencies).
// Runs are counted in column-major order and start with a background run; compressed "counts" strings use
// pycocotools' 6-bit-per-character encoding where each count after the second is a delta to the count two back.
"use strict";

const PerceptraRLE = (() => {
  function countsFromString(text) {
    const counts = [];
    let p = 0;
    while (p < text.length) {
      let x = 0, k = 0, more = 1, c = 0;
      while (more) {
        if (p >= text.length) throw new Error("truncated RLE counts");
        c = text.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p += 1;
        k += 1;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  // {"size": [H, W], "counts": string | number[]} → {height, width, data: Uint8Array [H * W], row-major, 0/1}
  function decode(rle) {
    const [height, width] = rle.size;
    const counts = typeof rle.counts === "string" ? countsFromString(rle.counts) : rle.counts;
    const data = new Uint8Array(height * width);
    let index = 0, value = 0;
    for (const run of counts) {
      if (run < 0 || index + run > height * width) throw new Error("RLE counts do not fit the mask size");
      if (value) {
        for (let i = index; i < index + run; i += 1) {
          const x = Math.floor(i / height), y = i - x * height;
          data[y * width + x] = 1;
        }
      }
      index += run;
      value ^= 1;
    }
    if (index !== height * width) throw new Error("RLE counts do not add up to the mask size");
    return { height, width, data };
  }

  return { decode, countsFromString };
})();
