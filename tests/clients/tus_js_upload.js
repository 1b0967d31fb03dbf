// Uploads a file to chunkd with tus-js-client (npm), under Node.
// usage: node tus_js_upload.js ENDPOINT TOKEN FILE CHUNK_SIZE MODE [PROTOCOL]
// MODE: whole    - one upload
//       parallel - two partial uploads at once, joined by concatenation
//       deferred - the length is told only with the last chunk
//       resume   - abort after the first chunk, then a new Upload resumes
//                  from the server's offset through its URL
// PROTOCOL: tus-v1 (the default), ietf-draft-03 or ietf-draft-05 (the IETF
//           draft, interop versions 5 and 6)
// Prints the upload URL on the last line.
const fs = require("fs");
const tus = require("tus-js-client");

const [endpoint, token, path, chunkSizeText, mode, protocol = "tus-v1"] =
  process.argv.slice(2);
const chunkSize = Number(chunkSizeText);
const data = fs.readFileSync(path);

function upload(options) {
  return new Promise((resolve, reject) => {
    const u = new tus.Upload(data, {
      endpoint,
      chunkSize,
      protocol,
      retryDelays: [0, 100, 200, 500, 1000],
      headers: { Authorization: "Token " + token },
      metadata: { filename: "js-" + path.split("/").pop() },
      onError: reject,
      onSuccess: () => resolve(u),
      ...options(() => u),
    });
    u.start();
  });
}

async function main() {
  if (mode === "whole") {
    const u = await upload(() => ({}));
    console.log(u.url);
  } else if (mode === "deferred") {
    const u = await upload(() => ({ uploadLengthDeferred: true }));
    console.log(u.url);
  } else if (mode === "parallel") {
    const u = await upload(() => ({ parallelUploads: 2 }));
    console.log(u.url);
  } else if (mode === "resume") {
    const url = await new Promise((resolve, reject) => {
      const u = new tus.Upload(data, {
        endpoint,
        chunkSize,
        protocol,
        headers: { Authorization: "Token " + token },
        metadata: { filename: "js-resumed.bin" },
        onError: reject,
        onChunkComplete: () => {
          u.abort().then(() => resolve(u.url));
        },
      });
      u.start();
    });
    const u = await upload(() => ({ uploadUrl: url }));
    if (u.url !== url) throw new Error("resumed into another upload: " + u.url);
    console.log(u.url);
  } else {
    throw new Error("unknown mode " + mode);
  }
}

main().catch((err) => {
  console.error(String(err));
  process.exit(1);
});
