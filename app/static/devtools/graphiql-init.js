// Starts GraphiQL against this service's /graphql (kept in a file: the page's CSP allows no inline script).
(() => {
  const script = document.currentScript;
  const fetcher = GraphiQL.createFetcher({ url: new URL(script.dataset.endpoint, window.location.href).href });
  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, { fetcher, defaultEditorToolsVisibility: true }));
})();
