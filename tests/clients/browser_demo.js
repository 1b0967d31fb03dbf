// Drives chunkd's demo page in headless Chromium (Debian's chromium,
// through playwright-core from npm): a file picked into FilePond uploads in
// chunks while the network drops one chunk and then goes offline for a
// while (FilePond retries, then resumes from HEAD once told to retry); a
// file dropped on Uppy goes up over tus while one PATCH is dropped; FilePond
// reverts its upload, and loads and restores Uppy's. Saves a screenshot.
// usage: node browser_demo.js BASE_URL TOKEN SCREENSHOT
// Prints one JSON line: what each upload became, and what the page did.
const crypto = require("crypto");
const { chromium } = require("playwright-core");

const [base, token, screenshot] = process.argv.slice(2);
const CHUNK = 256 * 1024;

/// `size` bytes that differ everywhere, the same for the same seed.
function bytes(size, seed) {
  const out = Buffer.alloc(size);
  let block = Buffer.from(String(seed));
  for (let at = 0; at < size; at += block.length) {
    block = crypto.createHash("sha256").update(block).digest();
    block.copy(out, at);
  }
  return out;
}

const md5 = (data) => crypto.createHash("md5").update(data).digest("hex");

async function serverUpload(id) {
  const response = await fetch(`${base}/upload/${id}/`, {
    headers: { Authorization: "Token " + token },
  });
  return { status: response.status, body: response.ok ? await response.json() : null };
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1100, height: 1500 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push("page error: " + err.message));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().includes("net::ERR")) {
      problems.push("console: " + msg.text());
    }
  });
  const offsite = [];
  // What FilePond's restore and load requests were answered.
  const reads = {};
  page.on("response", (res) => {
    const asked = new URL(res.url()).searchParams;
    for (const kind of ["restore", "load"]) {
      if (asked.has(kind)) reads[kind] = res.status();
    }
  });
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith(base) && !url.startsWith("blob:") && !url.startsWith("data:")) {
      offsite.push(url);
    }
  });
  await page.goto(`${base}/demo/#token=${token}&chunk=${CHUNK}`);

  // FilePond: its 3rd chunk is dropped once on its way out; after its 6th
  // the network goes away until every retry has failed.
  const pondData = bytes(12 * CHUNK + 4321, 1);
  let patches = 0;
  let dropped = 0;
  await page.route("**/filepond/?patch=*", async (route) => {
    if (route.request().method() !== "PATCH") return route.continue();
    patches += 1;
    if (patches === 3) {
      dropped += 1;
      return route.abort("connectionreset");
    }
    if (patches === 8) {
      await context.setOffline(true);
      return route.abort("internetdisconnected");
    }
    return route.continue();
  });
  await page.setInputFiles("input.filepond--browser", {
    name: "pond.bin",
    mimeType: "application/octet-stream",
    buffer: pondData,
  });
  await page
    .locator('[data-filepond-item-state="processing-error"]')
    .waitFor({ timeout: 60000 });
  await context.setOffline(false);
  await page.click(".filepond--action-retry-item-processing");
  const pondDone = page.locator('#stored li[data-via="FilePond"]');
  await pondDone.waitFor({ timeout: 60000 });
  const pondId = await pondDone.getAttribute("data-id");
  const pondMd5 = await pondDone.getAttribute("data-md5");

  // Uppy over tus: its 2nd PATCH is dropped once.
  const uppyData = bytes(9 * CHUNK + 777, 2);
  let tusPatches = 0;
  await page.route("**/files/*", async (route) => {
    if (route.request().method() === "PATCH" && ++tusPatches === 2) {
      dropped += 1;
      return route.abort("connectionreset");
    }
    return route.continue();
  });
  await page.setInputFiles("input.uppy-Dashboard-input >> nth=0", {
    name: "uppy.bin",
    mimeType: "application/octet-stream",
    buffer: uppyData,
  });
  const uppyDone = page.locator('#stored li[data-via="Uppy"]');
  await uppyDone.waitFor({ timeout: 60000 });
  const uppyId = await uppyDone.getAttribute("data-id");
  const uppyMd5 = await uppyDone.getAttribute("data-md5");

  // Revert FilePond's upload; load and restore Uppy's into FilePond.
  await page.click(".filepond--action-revert-item-processing");
  await page.waitForFunction(
    () => window.chunkdDemo.pond.getFiles().every((f) => f.serverId === null),
  );
  let reverted = await serverUpload(pondId);
  for (let i = 0; i < 50 && reverted.status !== 404; i++) {
    await new Promise((r) => setTimeout(r, 100));
    reverted = await serverUpload(pondId);
  }
  // Removing a server's file from FilePond reverts it there, so both are
  // added side by side.
  for (const type of ["limbo", "local"]) {
    await page.evaluate(
      ([id, type]) =>
        window.chunkdDemo.pond.addFile(id, { type }).catch((err) => {
          throw new Error(type + ": " + JSON.stringify(err.error || err));
        }),
      [uppyId, type],
    );
  }
  const files = await page.evaluate(
    (id) =>
      window.chunkdDemo.pond
        .getFiles()
        .filter((f) => f.serverId === id)
        .map((f) => ({ name: f.filename, size: f.fileSize })),
    uppyId,
  );
  await page.screenshot({ path: screenshot, fullPage: true });
  await browser.close();

  console.log(
    JSON.stringify({
      filepond: { id: pondId, md5: pondMd5, expected: md5(pondData), size: pondData.length },
      uppy: { id: uppyId, md5: uppyMd5, expected: md5(uppyData), size: uppyData.length },
      dropped,
      reverted: reverted.status,
      reads,
      files,
      offsite,
      problems,
    }),
  );
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
