// The API explorer: Swagger UI on /openapi.json. A script file rather than inline, so the page's
// Content-Security-Policy needs no 'unsafe-inline' for scripts.
"use strict";
window.addEventListener("load", function () {
  var root = document.getElementById("explorer");
  window.explorer = SwaggerUIBundle({
    url: root.dataset.document,
    domNode: root,
    deepLinking: true,
    // The bearer token given to Authorize lasts for the page, not in the browser's storage.
    persistAuthorization: false,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
