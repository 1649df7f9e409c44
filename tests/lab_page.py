"""In-page JavaScript for the browser test: find a notebook's panel in JupyterLab, run all of it,
read back what every code cell did, and know when the kernel has answered every message the page
sent it."""

FIND_PANEL = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  for (const w of Array.from(app.shell.widgets('main'))) {
    if (w.context && w.context.path === path && w.content && w.sessionContext) return w;
  }
  return null;
}
"""

KERNEL_READY = f"""
(path) => {{
  const panel = ({FIND_PANEL})(path);
  if (!panel || !panel.context.isReady) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
}}
"""

# Tracks, in window.__peftlabPending, the shell messages this page sent (widget updates and button
# clicks included) whose kernel has not yet reported idle for them: once none are left, the kernel
# has handled every move so far and sent every output it caused.
TRACK_PENDING = f"""
(path) => {{
  const kernel = ({FIND_PANEL})(path).sessionContext.session.kernel;
  const pending = window.__peftlabPending = new Set();
  kernel.anyMessage.connect((_, args) => {{
    const msg = args.msg;
    if (args.direction === 'send' && msg.channel === 'shell') pending.add(msg.header.msg_id);
    else if (args.direction === 'recv' && msg.channel === 'iopub' && msg.header.msg_type === 'status'
             && msg.content.execution_state === 'idle') pending.delete(msg.parent_header.msg_id);
  }});
}}
"""

PENDING = "() => window.__peftlabPending.size"

CLEAR_AND_RUN_ALL = f"""
async (path) => {{
  const app = window.jupyterapp;
  const panel = ({FIND_PANEL})(path);
  app.shell.activateById(panel.id);
  await panel.sessionContext.ready;
  await app.commands.execute('notebook:clear-all-cell-outputs');
  const stale = Array.from(panel.content.model.cells)
    .filter(c => c.type === 'code' && c.executionCount != null).length;
  window.__peftlabRunAll = {{done: false, result: null, error: null}};
  app.commands.execute('notebook:run-all-cells')
    .then(r => {{ window.__peftlabRunAll.result = r; }})
    .catch(e => {{ window.__peftlabRunAll.error = String(e); }})
    .finally(() => {{ window.__peftlabRunAll.done = true; }});
  return stale;
}}
"""

RUN_FINISHED = f"""
(path) => {{
  const panel = ({FIND_PANEL})(path);
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!(window.__peftlabRunAll && window.__peftlabRunAll.done && kernel && kernel.status === 'idle');
}}
"""

NOTEBOOK_STATE = f"""
(path) => {{
  const panel = ({FIND_PANEL})(path);
  const cells = Array.from(panel.content.model.cells);
  const code = [], errors = [], unrun = [];
  cells.forEach((c, i) => {{
    if (c.type !== 'code') return;
    const source = c.sharedModel.getSource();
    if (!source.trim()) return;
    code.push(c.executionCount);
    if (c.executionCount == null) unrun.push(i);
    for (const o of c.outputs.toJSON()) {{
      if (o.output_type === 'error') errors.push({{cell: i, ename: o.ename, evalue: o.evalue}});
    }}
  }});
  return {{counts: code, unrun, errors, runAll: window.__peftlabRunAll,
           kernel: panel.sessionContext.session.kernel.status}};
}}
"""

WIDGET_TEXT_PROBLEMS = """
() => {
  const text = Array.from(document.querySelectorAll('.jp-OutputArea'))
    .map(e => e.textContent).join('\\n');
  return {loading: text.includes('Loading widget...'),
          error: (text.match(/Error displaying widget[^\\n]*/) || [null])[0]};
}
"""
