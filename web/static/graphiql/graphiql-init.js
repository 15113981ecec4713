// Renders GraphiQL against the page's own URL (so it works behind the erxes gateway's /pl:imap prefix too).
(function () {
  var fetcher = GraphiQL.createFetcher({ url: window.location.pathname });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultEditorToolsVisibility: 'headers',
    defaultQuery: [
      '# Every field but _service needs the header the erxes gateway forwards:',
      '#   {"user": "<base64 of the user\'s JSON, with its _id>"}  (the Headers tab below)',
      '{',
      '  imapGetIntegrations {',
      '    inboxId',
      '    user',
      '    host',
      '  }',
      '}',
      ''
    ].join('\n')
  }));
})();
