// sharp as a long-running peer for pixq's engine: one process per test session (or bench run),
// so Node's and libvips' start-up are paid once. Used by tests/differential (the differential
// test) and bench/engine_sharp.py (the speed ratio); the Python side is sharp_client.py.
//
// Protocol: one JSON request per stdin line, one JSON answer per stdout line, in order.
//   {"type": "versions"}                        -> {"ok": true, "versions": sharp.versions, ...}
//   {"type": "render", "cases": [Case, ...]}    -> {"ok": true, "results": [Result, ...]}
//   {"type": "bench", "case": Case, "repetitions": n}
//                                               -> {"ok": true, "ms": [n timings], "bytes": size}
// Case: {"id", "input": path, "stages": [[Op, ...], ...], "output": {"format", "options"}, "out": path}
//   Each stage is one sharp pipeline (sharp runs the calls of one pipeline in its own fixed
//   order, not in call order, so a multi-step pipeline is several stages, chained through an
//   uncompressed raw buffer). The first stage reads the input with EXIF auto-orientation.
// Result: {"id", "ok": true, "width", "height", "channels", "format", "bytes"} or {"id", "ok": false, "error"}.
//
// Single thread and no operation cache, always: the test wants determinism and the bench wants
// exactly the conditions (sharp.concurrency(1), sharp.cache(false)).

import { readFile, writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import sharp from "sharp";

sharp.concurrency(1);
sharp.cache(false);

function apply(pipeline, op) {
  switch (op.op) {
    case "resize": return pipeline.resize(op.options);
    case "extract": return pipeline.extract(op.region);
    case "extend": return pipeline.extend({ top: op.top, bottom: op.bottom, left: op.left, right: op.right,
                                            background: op.background });
    case "rotate": return pipeline.rotate(op.angle);
    case "flip": return pipeline.flip();
    case "flop": return pipeline.flop();
    case "blur": return pipeline.blur(op.sigma);
    case "sharpen": return pipeline.sharpen({ sigma: op.sigma });
    case "greyscale": return pipeline.greyscale();
    case "flatten": return pipeline.flatten({ background: op.background });
    default: throw new Error(`unknown op ${JSON.stringify(op.op)}`);
  }
}

/** Run a case's stages on the input bytes; the last stage encodes. */
async function render(testCase, input) {
  let raw = null;
  const stages = testCase.stages.length ? testCase.stages : [[]];
  for (let index = 0; index < stages.length; index += 1) {
    let pipeline = raw === null
      ? sharp(input, { failOn: "error", autoOrient: true })
      : sharp(raw.data, { raw: { width: raw.info.width, height: raw.info.height, channels: raw.info.channels } });
    for (const op of stages[index]) pipeline = apply(pipeline, op);
    if (index === stages.length - 1) {
      const { format, options } = testCase.output;
      return pipeline.toFormat(format, options ?? {}).toBuffer({ resolveWithObject: true });
    }
    raw = await pipeline.raw().toBuffer({ resolveWithObject: true });
  }
  throw new Error("unreachable");
}

async function renderCase(testCase) {
  try {
    const { data, info } = await render(testCase, await readFile(testCase.input));
    await writeFile(testCase.out, data);
    return { id: testCase.id, ok: true, width: info.width, height: info.height, channels: info.channels,
             format: info.format, bytes: data.length };
  } catch (error) {
    return { id: testCase.id, ok: false, error: String(error?.message ?? error) };
  }
}

/** Time n renders of one case from bytes already in memory (no file I/O inside the timing). */
async function bench(testCase, repetitions) {
  const input = await readFile(testCase.input);
  const ms = [];
  let bytes = 0;
  for (let i = 0; i < repetitions; i += 1) {
    const started = process.hrtime.bigint();
    const { data } = await render(testCase, input);
    ms.push(Number(process.hrtime.bigint() - started) / 1e6);
    bytes = data.length;
  }
  return { ms, bytes };
}

async function answer(request) {
  switch (request.type) {
    case "versions":
      return { versions: sharp.versions, concurrency: sharp.concurrency(), cache: sharp.cache(), node: process.version };
    case "render": {
      const results = [];
      for (const testCase of request.cases) results.push(await renderCase(testCase));
      return { results };
    }
    case "bench":
      return bench(request.case, request.repetitions);
    default:
      throw new Error(`unknown request type ${JSON.stringify(request.type)}`);
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  let reply;
  try {
    reply = { ok: true, ...(await answer(JSON.parse(line))) };
  } catch (error) {
    reply = { ok: false, error: String(error?.stack ?? error) };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}
