// The demo page: FilePond (chunked, to /filepond/) and Uppy (tus, to
// /files/) with the API token typed in, or given as #token=… (and
// #chunk=<bytes> for the chunk size). Each finished upload is listed with
// its MD5, as chunkd computed it, and a link that downloads it.
"use strict";

const params = new URLSearchParams(location.hash.slice(1));
const chunkSize = Number(params.get("chunk")) || 5000000;
const tokenInput = document.getElementById("token");
tokenInput.value = params.get("token") || sessionStorage.getItem("chunkd-token") || "";

function authHeaders() {
  const token = tokenInput.value.trim();
  return token ? { Authorization: "Token " + token } : {};
}

// A link fetches the file with the token, which a plain link cannot send.
function downloadLink(upload) {
  const link = document.createElement("a");
  link.href = "/upload/" + upload.id + "/file";
  link.textContent = upload.filename;
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const response = await fetch(link.href, { headers: authHeaders() });
    const url = URL.createObjectURL(await response.blob());
    const save = document.createElement("a");
    save.href = url;
    save.download = upload.filename;
    save.click();
    URL.revokeObjectURL(url);
  });
  return link;
}

// `key` ties the line to the widget's file, so that a revert takes it off.
async function showStored(via, id, key) {
  const response = await fetch("/upload/" + id + "/", { headers: authHeaders() });
  const upload = await response.json();
  const item = document.createElement("li");
  item.dataset.via = via;
  item.dataset.id = upload.id;
  item.dataset.md5 = upload.md5;
  item.dataset.key = key;
  const md5 = document.createElement("code");
  md5.textContent = upload.md5;
  item.append(via + ": ", downloadLink(upload), " (" + upload.offset + " bytes), MD5 ", md5);
  document.getElementById("stored").append(item);
}

function pondOptions() {
  return {
    chunkUploads: true,
    chunkForce: true,
    chunkSize,
    chunkRetryDelays: [200, 500, 1000, 2000, 4000],
    server: { url: "/filepond/", headers: authHeaders() },
    // Files FilePond restored or loaded from the server are not new.
    onprocessfile: (error, file) => {
      if (!error && file.origin === FilePond.FileOrigin.INPUT) {
        showStored("FilePond", file.serverId, "pond-" + file.id);
      }
    },
    onprocessfilerevert: (file) => {
      document.querySelector('#stored li[data-key="pond-' + file.id + '"]')?.remove();
    },
  };
}

const pond = FilePond.create(document.getElementById("pond"), pondOptions());
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("chunkd-token", tokenInput.value.trim());
  pond.setOptions(pondOptions());
});

const uppy = new Uppy.Uppy({ autoProceed: true })
  .use(Uppy.Dashboard, {
    inline: true,
    target: "#uppy",
    height: 320,
    proudlyDisplayPoweredByUppy: false,
  })
  .use(Uppy.Tus, {
    endpoint: "/files/",
    chunkSize,
    retryDelays: [0, 200, 500, 1000, 2000, 4000],
    headers: () => authHeaders(),
  });
uppy.on("upload-success", (file, response) => {
  showStored("Uppy", response.uploadURL.split("/").pop(), "uppy-" + file.id);
});

// For tests and the curious: the widgets themselves.
window.chunkdDemo = { pond, uppy };
