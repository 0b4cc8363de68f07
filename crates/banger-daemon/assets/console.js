// banger web console: progressive enhancement only; every page works without this file.
// Served from bangerd itself ('self' is all the Content-Security-Policy allows).
'use strict';

(() => {
  // A page the user is leaving must not reload itself: a reload started after the user
  // clicked a link would cancel their navigation and bring the old page back.
  let leaving = false;
  window.addEventListener('beforeunload', () => {
    leaving = true;
  });
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) leaving = false;
  });
  const reload = () => {
    if (!leaving) location.reload();
  };

  // Operations in progress: poll their JSON every second and update the page in place.
  // When one finishes, reload once so the page shows its outcome (links, lists).
  const poll = (root) => {
    const url = root.getAttribute('data-op');
    let busy = false;
    const timer = setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        const response = await fetch(url, {
          credentials: 'same-origin',
          headers: { Accept: 'application/json' },
        });
        if (response.status === 401) {
          clearInterval(timer);
          reload();
          return;
        }
        if (!response.ok) return;
        const op = await response.json();
        update(root, op);
        if (!op.running) {
          clearInterval(timer);
          setTimeout(reload, 400);
        }
      } catch (_) {
        // The daemon restarting or the network blipping: try again next second.
      } finally {
        busy = false;
      }
    }, 1000);
  };

  const setState = (el, state) => {
    if (!el) return;
    el.textContent = state;
    el.className = 'state state-' + state;
  };

  const setBar = (el, percent) => {
    if (!el) return;
    el.value = percent;
    el.textContent = percent + '%';
  };

  const update = (root, op) => {
    setState(root.querySelector('[data-role="state"]'), op.state);
    setBar(root.querySelector('[data-role="percent"]'), op.percent);
    const current = root.querySelector('[data-role="current"]');
    if (current) current.textContent = op.current;
    op.stages.forEach((stage, i) => {
      const row = root.querySelector('[data-stage="' + i + '"]');
      if (!row) return;
      setState(row.querySelector('[data-role="stage-state"]'), stage.state);
      setBar(row.querySelector('[data-role="stage-percent"]'), stage.percent);
      const detail = row.querySelector('[data-role="stage-detail"]');
      if (detail) detail.textContent = stage.detail;
    });
  };

  // A VM's console while its VMM runs: poll its last lines every two seconds and show them
  // in place, keeping the view at the bottom unless the user scrolled up. When the VM's state
  // changes (it stopped, or died), reload once so the page shows the new state and actions.
  const follow = (root) => {
    const url = root.getAttribute('data-console');
    const state = root.getAttribute('data-vm-state');
    const pre = root.querySelector('[data-role="console"]');
    const note = root.querySelector('[data-role="console-note"]');
    if (!pre) return;
    pre.scrollTop = pre.scrollHeight;
    let busy = false;
    const timer = setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        const response = await fetch(url, {
          credentials: 'same-origin',
          headers: { Accept: 'application/json' },
        });
        if (response.status === 401 || response.status === 404) {
          clearInterval(timer);
          reload();
          return;
        }
        if (!response.ok) return;
        const tail = await response.json();
        if (tail.state !== state) {
          clearInterval(timer);
          reload();
          return;
        }
        const text = tail.lines.join('\n');
        if (pre.textContent !== text) {
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
          pre.textContent = text;
          if (atEnd) pre.scrollTop = pre.scrollHeight;
          if (note) note.textContent = tail.note;
        }
      } catch (_) {
        // The daemon restarting or the network blipping: try again next time.
      } finally {
        busy = false;
      }
    }, 2000);
  };

  // A running VM's guest section (agent health, listening ports): ask for it again every ten
  // seconds and swap it in. The answer is HTML the console rendered, escaped, itself; a 204
  // means the VM stopped running (the console's poll reloads the page for that).
  const refreshGuest = (section) => {
    const url = section.getAttribute('data-guest');
    let current = section;
    let busy = false;
    const timer = setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        const response = await fetch(url, {
          credentials: 'same-origin',
          headers: { Accept: 'text/html' },
        });
        if (response.status === 204 || response.status === 401 || response.status === 404) {
          clearInterval(timer);
          return;
        }
        if (!response.ok) return;
        const template = document.createElement('template');
        template.innerHTML = await response.text();
        const fresh = template.content.querySelector('#guest');
        if (fresh) {
          current.replaceWith(fresh);
          current = fresh;
        }
      } catch (_) {
        // The daemon restarting or the network blipping: try again next time.
      } finally {
        busy = false;
      }
    }, 10000);
  };

  // "Browse…" links of the register form: carry what has been typed so far to the picker,
  // which hands it back with the chosen file.
  const carry = (link) => {
    link.addEventListener('click', (event) => {
      const form = document.getElementById(link.getAttribute('data-carry'));
      if (!form) return;
      const url = new URL(link.href, location.href);
      for (const name of ['name', 'kernel', 'initrd', 'rootfs']) {
        const input = form.elements.namedItem(name);
        if (!input) continue;
        if (input.value) url.searchParams.set(name, input.value);
        else url.searchParams.delete(name);
      }
      event.preventDefault();
      location.assign(url.pathname + url.search);
    });
  };

  document.querySelectorAll('[data-op]').forEach(poll);
  document.querySelectorAll('[data-console]').forEach(follow);
  document.querySelectorAll('[data-guest]').forEach(refreshGuest);
  document.querySelectorAll('a[data-carry]').forEach(carry);
  // Tells the browser test (and CSS, if it ever needs to) that the script ran.
  document.documentElement.dataset.console = 'ready';
})();
