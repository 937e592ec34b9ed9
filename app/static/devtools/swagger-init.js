// Starts Swagger UI on the service's own OpenAPI document (kept in a file: the page's CSP allows no inline script).
window.addEventListener("DOMContentLoaded", () => {
  const script = document.querySelector("script[data-spec-url]");
  window.ui = SwaggerUIBundle({
    url: script.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
