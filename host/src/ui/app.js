// keyport web UI: the OAuth popup, dialogs, forms and toasts. Every change goes through the JSON
// API with the session cookie and the page's CSRF token.
"use strict";
(function () {
  let csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // A session renewed in another tab has a new CSRF token: fetch it once and retry.
  async function api(method, url, body, raw, background) {
    const res = await send(method, url, body, raw, background);
    const m = res.body && res.body.error && res.body.error.message;
    if (res.status === 403 && m && m.indexOf("CSRF") >= 0) {
      try {
        const r = await fetch("/ui/csrf", { credentials: "same-origin" });
        if (r.ok) { csrf = (await r.json()).csrf; return send(method, url, body, raw, background); }
      } catch (e) { /* fall through with the first answer */ }
    }
    return res;
  }

  async function send(method, url, body, raw, background) {
    const headers = { "X-CSRF-Token": csrf };
    let payload;
    if (raw !== undefined) { payload = raw; headers["Content-Type"] = "application/wasm"; }
    else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
    let r;
    try {
      r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    } catch (e) {
      return { status: 0, body: { error: { message: "keyport did not answer. Check your network and try again." } } };
    }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401 && !background) {
      // Keep what the user typed: offer to sign in again instead of navigating away.
      toast("Your session has ended. Sign in again (in a new tab keeps this page), then retry.", "error",
        { href: "/login?next=" + encodeURIComponent(location.pathname + location.search), text: "Sign in" });
      return { status: 401, body: { error: { message: "Your session has ended; sign in again." } } };
    }
    return { status: r.status, body: data || {} };
  }
  function errorText(res, fallback) {
    const m = res.body && res.body.error && res.body.error.message;
    return m || fallback;
  }

  // Toasts; a toast can survive one reload (flash).
  // Errors stay until dismissed; the container is the live region.
  function toast(message, kind, link) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const t = document.createElement("div");
    t.className = "toast toast-" + (kind || "ok");
    const text = document.createElement("span");
    text.textContent = message;
    t.appendChild(text);
    if (link) { const a = document.createElement("a"); a.href = link.href; a.textContent = link.text; a.target = "_blank"; t.appendChild(a); }
    const close = document.createElement("button");
    close.type = "button"; close.className = "link"; close.textContent = "Dismiss";
    close.addEventListener("click", () => t.remove());
    t.appendChild(close);
    box.appendChild(t);
    if (kind !== "error") setTimeout(() => t.remove(), 6000);
  }
  function flash(message, kind) { sessionStorage.setItem("keyport-flash", JSON.stringify([message, kind || "ok"])); }
  const pending = sessionStorage.getItem("keyport-flash");
  if (pending) { sessionStorage.removeItem("keyport-flash"); try { const [m, k] = JSON.parse(pending); toast(m, k); } catch (e) {} }

  // Outcome of a same-window OAuth flow (fixed texts: the URL is anyone's to write).
  const OUTCOMES = {
    access_denied: "The provider denied access — try again and approve the permissions.",
    token_exchange_failed: "The provider did not complete the authorization. Try connecting again; if it keeps failing, check the provider app settings under Admin.",
    provider_error: "The provider returned an error. Try connecting again.",
    account_mismatch: "This workspace requires the connected account to be your own (the one with your email address). Connect again with that account; the connection page says which one.",
  };
  function outcome(status, error) {
    if (status === "active") return ["Connected.", "ok"];
    if (status === "pending") return ["Connected. Looking up the account…", "ok"];
    return [OUTCOMES[error] || "The connection was not completed. Try connecting again.", "error"];
  }
  {
    const q = new URLSearchParams(location.search);
    if (q.get("oauth") === "1" && q.get("status")) {
      const [m, k] = outcome(q.get("status"), q.get("error"));
      toast(m, k);
      history.replaceState(null, "", location.pathname);
    }
  }

  // Local times.
  document.querySelectorAll("time[datetime]").forEach((el) => {
    const d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) { el.textContent = d.toLocaleString(); el.title = el.getAttribute("datetime"); }
  });

  // A link to a closed section (/admin#app-github) opens it.
  if (location.hash.length > 1) {
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView({ block: "start" }); }
  }

  // Dialogs.
  document.addEventListener("click", (ev) => {
    const open = ev.target.closest("[data-open-dialog]");
    if (open) { const d = document.getElementById(open.dataset.openDialog); if (d) d.showModal(); }
    const close = ev.target.closest("[data-close-dialog]");
    if (close) { const d = close.closest("dialog"); if (d) d.close(); }
  });

  // OAuth in a popup through keyport-connect.js (the script platforms embed), with a
  // same-window fallback when the popup is blocked.
  function oauthPopup(key, start) {
    const notice = document.querySelector('[data-popup-blocked="' + CSS.escape(key) + '"]');
    const returnTo = location.origin + location.pathname + "?oauth=1";
    let url = null;
    let started = null;
    window.KeyportConnect.connect((opened) => start(opened.popup ? null : returnTo).then((res) => {
      if (res.status !== 200 && res.status !== 201) {
        toast(errorText(res, "Could not start the connection."), "error");
        const e = new Error("not started"); e.reason = "not_started"; throw e;
      }
      url = res.body.authorize_url;
      started = res.body.connection_id;
      return url;
    }), { fallback: "reject" }).then((r) => {
      const [m, k] = outcome(r.status);
      flash(m, k);
      location.reload();
    }, (e) => {
      const reason = e && e.reason;
      if (reason === "not_started") return;
      if (reason && !["popup_blocked", "closed", "timeout", "invalid_redirect"].includes(reason)) {
        const [m, k] = outcome("error", reason);
        flash(m, k);
        location.reload();
        return;
      }
      if (reason === "popup_blocked" && url && notice) {
        notice.textContent = "";
        notice.append("Your browser blocked the sign-in window. Allow pop-ups for this site, or ");
        const a = document.createElement("a");
        a.href = url; a.textContent = "continue in this window"; a.className = "button primary";
        a.setAttribute("data-same-window", "");
        notice.append(a, ".");
        notice.hidden = false;
        a.focus();
        return;
      }
      // A closed popup is not always the end: providers that cut the opener link look closed
      // while the user still signs in, and their result arrives by broadcast (every page listens).
      // So: reload once the connection shows it was authorized, otherwise say so and keep looking.
      if (notice && notice.hidden) {
        notice.textContent = reason === "timeout"
          ? "keyport did not hear back from the sign-in window in time. Choose Connect again."
          : "The sign-in window was closed before keyport heard back. If you finished signing in, the result appears here; otherwise choose Connect again.";
        notice.hidden = false;
      }
      if (!started) return;
      let tries = 0;
      const watch = setInterval(async () => {
        tries += 1;
        if (tries > 120) { clearInterval(watch); return; }
        const c = await api("GET", "/api/v1/connections/" + started, undefined, undefined, true);
        const authorized = c && c.status === 200 && (c.body.status !== "pending" || c.body.last_refreshed_at);
        if (authorized) { clearInterval(watch); const [m, k] = outcome(c.body.status); flash(m, k); location.reload(); }
      }, 1000);
    });
  }
  document.querySelectorAll("[data-connect]").forEach((b) => b.addEventListener("click", () => {
    const id = b.dataset.connect;
    oauthPopup(id, (returnTo) => api("POST", "/api/v1/connections/oauth/start", returnTo ? { connector: id, return_to: returnTo } : { connector: id }));
  }));
  // Connectors that need settings first (a subdomain, a shop): the dialog's form starts the flow.
  document.querySelectorAll("[data-connect-form]").forEach((form) => form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = form.dataset.connectForm;
    const [config, errors] = readConfig(form);
    if (errors.length) { showErrors(form, errors); return; }
    showErrors(form, []);
    const dialog = form.closest("dialog");
    if (dialog) dialog.close();
    oauthPopup(id, (returnTo) => api("POST", "/api/v1/connections/oauth/start", returnTo ? { connector: id, config, return_to: returnTo } : { connector: id, config }));
  }));
  document.querySelectorAll("[data-reconnect]").forEach((b) => b.addEventListener("click", () => {
    const id = b.dataset.reconnect;
    oauthPopup(id, (returnTo) => api("POST", "/api/v1/connections/" + id + "/reconnect", returnTo ? { return_to: returnTo } : {}));
  }));

  // A result broadcast by a sign-in window this page did not open itself (or lost track of).
  if (window.BroadcastChannel) {
    const everyPage = new BroadcastChannel("keyport-oauth");
    everyPage.onmessage = (ev) => {
      if (!ev.data || ev.data.type !== "keyport:oauth") return;
      const [m, k] = outcome(ev.data.status, ev.data.error);
      flash(m, k);
      location.reload();
    };
  }

  // "Connected as" may arrive a moment after the status.
  document.querySelectorAll("[data-poll-account]").forEach((el) => {
    const id = el.dataset.pollAccount;
    let tries = 0;
    const tick = async () => {
      tries += 1;
      const res = await api("GET", "/api/v1/connections/" + id, undefined, undefined, true);
      if (res.status === 401 || res.status === 404) return;
      const name = res.body && res.body.account && res.body.account.display_name;
      if (name) {
        el.textContent = "";
        el.classList.remove("muted");
        if (el.classList.contains("account")) { el.append("Connected as: "); const s = document.createElement("strong"); s.textContent = name; el.append(s); }
        else el.textContent = name;
        return;
      }
      if (tries < 30) setTimeout(tick, 1000);
    };
    setTimeout(tick, 500);
  });

  // Inline field errors.
  function showErrors(form, fields) {
    form.querySelectorAll("[data-error-for]").forEach((e) => { e.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    let first = null;
    for (const f of fields || []) {
      const slot = form.querySelector('[data-error-for="' + CSS.escape(f.path || "") + '"]') || form.querySelector("[data-error-for]");
      if (!slot) continue;
      slot.textContent = (slot.textContent ? slot.textContent + " " : "") + f.message;
      // The control that names this message in its aria-describedby.
      const input = slot.id ? form.querySelector('[aria-describedby~="' + CSS.escape(slot.id) + '"]') : null;
      if (input) { input.setAttribute("aria-invalid", "true"); first = first || input; }
    }
    if (first) first.focus();
  }

  // API-key connections.
  document.querySelectorAll("[data-api-key-form]").forEach((form) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const connector = form.dataset.apiKeyForm;
    const key = form.elements.api_key.value;
    if (!key.trim()) { showErrors(form, [{ path: "/api_key", message: "Paste the key first." }]); return; }
    const [config, errors] = readConfig(form);
    if (errors.length) { showErrors(form, errors); return; }
    const body = { connector, api_key: key };
    if (Object.keys(config).length) body.config = config;
    if (form.elements.name.value.trim()) body.name = form.elements.name.value.trim();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    const res = await api("POST", "/api/v1/connections", body);
    button.disabled = false;
    if (res.status === 201) {
      const who = res.body.account && res.body.account.display_name;
      flash(who ? "Connected as " + who + "." : "Connected.", "ok");
      location.reload();
      return;
    }
    const fields = (res.body.error && res.body.error.fields) || [];
    showErrors(form, fields.some((f) => f.path && f.path !== "/api_key" && form.querySelector('[data-error-for="' + CSS.escape(f.path) + '"]'))
      ? fields : [{ path: "/api_key", message: errorText(res, "The key was not accepted.") }]);
  }));
  // Admin: hide an integration in this workspace, or show it again.
  document.querySelectorAll("[data-hide-connector]").forEach((b) => b.addEventListener("click", async () => {
    const id = b.dataset.hideConnector;
    const hidden = b.dataset.hidden !== "true";
    const res = await api("PUT", "/api/v1/admin/catalogue/" + encodeURIComponent(id), { hidden });
    if (res.status === 200) { flash(hidden ? "Hidden from the Integrations page." : "Shown on the Integrations page again.", "ok"); location.reload(); }
    else toast(errorText(res, "Not changed."), "error");
  }));

  document.querySelectorAll("[data-api-key-replace]").forEach((form) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = form.elements.api_key.value;
    if (!key.trim()) { showErrors(form, [{ path: "/api_key", message: "Paste the key first." }]); return; }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    const res = await api("PUT", "/api/v1/connections/" + form.dataset.apiKeyReplace + "/api-key", { api_key: key });
    button.disabled = false;
    if (res.status === 200) { flash("API key replaced.", "ok"); location.reload(); return; }
    showErrors(form, [{ path: "/api_key", message: errorText(res, "The key was not accepted.") }]);
  }));

  // Connection actions.
  document.querySelectorAll("[data-refresh]").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    const res = await api("POST", "/api/v1/connections/" + b.dataset.refresh + "/refresh");
    b.disabled = false;
    if (res.status === 200) { flash("Connection refreshed.", "ok"); location.reload(); }
    else toast("Failed to refresh connection. You may need to reconnect. (" + errorText(res, "no details") + ")", "error");
  }));
  document.querySelectorAll("[data-set-enabled]").forEach((b) => b.addEventListener("click", async () => {
    const on = b.dataset.enabled === "true";
    b.disabled = true;
    const res = await api("PATCH", "/api/v1/connections/" + b.dataset.setEnabled, { enabled: on });
    b.disabled = false;
    if (res.status === 200) { flash(on ? "Connection enabled." : "Connection disabled.", "ok"); location.reload(); }
    else toast("Failed to change the connection: " + errorText(res, "no details"), "error");
  }));
  document.querySelectorAll("[data-revoke]").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    const res = await api("POST", "/api/v1/connections/" + b.dataset.revoke + "/revoke");
    b.disabled = false;
    const d = b.closest("dialog"); if (d) d.close();
    if (res.status === 200) {
      const pr = res.body.provider_revocation;
      flash(pr && pr.ok === false ? "Connection revoked. " + pr.message : "Connection revoked.", pr && pr.ok === false ? "error" : "ok");
      location.reload();
    } else toast("Failed to revoke the connection: " + errorText(res, "no details"), "error");
  }));
  document.querySelectorAll("[data-delete]").forEach((b) => b.addEventListener("click", async () => {
    const id = b.dataset.delete;
    const box = document.getElementById("delete-error");
    b.disabled = true;
    const res = await api("DELETE", "/api/v1/connections/" + id);
    b.disabled = false;
    const d = b.closest("dialog"); if (d) d.close();
    if (res.status === 204) { flash("Connection deleted.", "ok"); location.href = "/connections"; return; }
    if (box) {
      box.textContent = "";
      const p = document.createElement("p");
      p.textContent = errorText(res, "The connection could not be deleted.");
      box.append(p);
      if (res.status === 409) {
        const deps = await api("GET", "/api/v1/connections/" + id + "/dependents");
        const list = (deps.body && deps.body.dependents) || [];
        if (list.length) {
          const intro = document.createElement("p");
          intro.textContent = "These depend on it; remove them (or move them to another connection) first:";
          const ul = document.createElement("ul");
          list.forEach((d) => { const li = document.createElement("li"); const c = document.createElement("code"); c.textContent = d.ref; li.append(c); ul.append(li); });
          box.append(intro, ul);
        }
      }
      box.hidden = false;
      box.scrollIntoView({ block: "nearest" });
    }
  }));

  // Config forms generated from the JSON Schema: checked here first, then by the server. The
  // stored config is the base, so keys the form does not show are kept; an empty field drops its
  // key so the schema's default applies.
  function readConfig(form) {
    let out = {};
    try { out = JSON.parse(form.dataset.stored || "{}") || {}; } catch (e) { out = {}; }
    const errors = [];
    form.querySelectorAll("[data-type]").forEach((el) => {
      const key = el.name; const type = el.dataset.type; const path = "/" + key;
      if (type === "boolean") {
        if (el.hasAttribute("data-stored") || String(el.checked) !== el.dataset.initial) out[key] = el.checked;
        return;
      }
      if (el.validity && el.validity.badInput) { errors.push({ path, message: type === "integer" ? "Enter a whole number." : "Enter a number." }); return; }
      const v = el.value.trim();
      if (v === "") { delete out[key]; if (el.hasAttribute("data-required")) errors.push({ path, message: "Required." }); return; }
      if (type === "json") {
        try { out[key] = JSON.parse(v); } catch (e) { errors.push({ path, message: "Not valid JSON: " + e.message }); }
        return;
      }
      if (type === "integer" || type === "number") {
        const n = Number(v);
        if (!isFinite(n) || (type === "integer" && !Number.isInteger(n))) { errors.push({ path, message: type === "integer" ? "Enter a whole number." : "Enter a number." }); return; }
        if (el.dataset.min !== undefined && n < Number(el.dataset.min)) errors.push({ path, message: "Must be at least " + el.dataset.min + "." });
        if (el.dataset.max !== undefined && n > Number(el.dataset.max)) errors.push({ path, message: "Must be at most " + el.dataset.max + "." });
        out[key] = n; return;
      }
      if (type === "array") { out[key] = v.split(",").map((s) => s.trim()).filter(Boolean); return; }
      if (el.dataset.maxLength !== undefined && v.length > Number(el.dataset.maxLength)) errors.push({ path, message: "At most " + el.dataset.maxLength + " characters." });
      if (el.dataset.minLength !== undefined && v.length < Number(el.dataset.minLength)) errors.push({ path, message: "At least " + el.dataset.minLength + " characters." });
      if (el.dataset.pattern !== undefined) {
        // Patterns JavaScript cannot read are left to the server.
        let re = null;
        try { re = new RegExp(el.dataset.pattern, "u"); } catch (e) { re = null; }
        if (re && !re.test(v)) errors.push({ path, message: "Does not have the expected format." });
      }
      out[key] = v;
    });
    return [out, errors];
  }
  document.querySelectorAll("[data-config-form]").forEach((form) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const [config, errors] = readConfig(form);
    if (errors.length) { showErrors(form, errors); toast("Settings not saved: fix the highlighted fields.", "error"); return; }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    const res = await api("PATCH", "/api/v1/connections/" + form.dataset.configForm, { config });
    button.disabled = false;
    if (res.status === 200) {
      form.dataset.stored = JSON.stringify(res.body.config || config);
      form.querySelectorAll('[data-type="boolean"]').forEach((b) => { b.dataset.initial = String(b.checked); b.setAttribute("data-stored", ""); });
      showErrors(form, []);
      toast("Settings saved.", "ok");
      return;
    }
    const fields = res.body.error && res.body.error.fields;
    showErrors(form, fields && fields.length ? fields : [{ path: "", message: errorText(res, "Not saved.") }]);
    toast("Settings not saved: " + errorText(res, "fix the highlighted fields."), "error");
  }));

  // The workspace switch submits on change (the button stays for keyboards without scripts).
  document.querySelectorAll("[data-workspace-form]").forEach((form) => {
    const cur = form.querySelector("[data-current-path]");
    if (cur) cur.value = location.pathname + location.search;
    const sel = form.querySelector("select");
    if (sel) sel.addEventListener("change", () => form.submit());
  });

  // Integrations category filter.
  const cat = document.querySelector("[data-category-filter]");
  if (cat) cat.addEventListener("change", () => {
    document.querySelectorAll(".card[data-categories]").forEach((c) => {
      c.hidden = cat.value !== "" && !c.dataset.categories.split(" ").includes(cat.value);
    });
  });

  // Admin.
  const upload = document.querySelector("[data-upload-form]");
  if (upload) upload.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = upload.elements.file.files[0];
    if (!file) { showErrors(upload, [{ path: "/upload", message: "Choose a .wasm file." }]); return; }
    const grant = encodeURIComponent(upload.elements.grant.value.replace(/\s+/g, ""));
    const res = await api("POST", "/api/v1/admin/connectors" + (grant ? "?grant=" + grant : ""), undefined, await file.arrayBuffer());
    if (res.status === 201) { flash("Connector loaded.", "ok"); location.reload(); }
    else if (res.status === 202) { flash("Uploaded; it waits for approval of its egress hosts. The current version keeps serving.", "ok"); location.reload(); }
    else showErrors(upload, [{ path: "/upload", message: errorText(res, "The upload was refused.") }]);
  });
  document.querySelectorAll("[data-approve]").forEach((b) => b.addEventListener("click", async () => {
    const id = b.dataset.approve;
    const input = document.querySelector('[data-approve-hosts="' + CSS.escape(id) + '"]');
    const hosts = (input ? input.value : "").split(",").map((s) => s.trim()).filter(Boolean);
    const res = await api("POST", "/api/v1/admin/connectors/" + id + "/approve", { hosts });
    if (res.status === 200) { flash(res.body.activated ? "Approved; the new version serves." : "Hosts granted; more are still missing.", "ok"); location.reload(); }
    else toast(errorText(res, "Approval failed."), "error");
  }));
  const imp = document.querySelector("[data-import-form]");
  if (imp) imp.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let body;
    const def = imp.elements.definition.value.trim();
    if (def) {
      try { body = JSON.parse(def); } catch (e) { showErrors(imp, [{ path: "/import", message: "The definition is not valid JSON: " + e.message }]); return; }
      if (imp.elements.issuer.value.trim()) body.issuer = imp.elements.issuer.value.trim();
    } else if (imp.elements.issuer.value.trim()) body = { issuer: imp.elements.issuer.value.trim() };
    else { showErrors(imp, [{ path: "/import", message: "Give an issuer URL or a definition." }]); return; }
    const res = await api("POST", "/api/v1/admin/providers", body);
    if (res.status === 201) { flash("Provider imported; it is on the Integrations page.", "ok"); location.reload(); return; }
    const fields = (res.body.error && res.body.error.fields) || [];
    showErrors(imp, [{ path: "/import", message: errorText(res, "Import failed.") + fields.map((f) => " " + f.path + ": " + f.message).join(";") }]);
  });
  document.querySelectorAll("[data-app-form]").forEach((form) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = form.dataset.appForm;
    const body = { client_id: form.elements.client_id.value.trim() };
    if (form.elements.client_secret.value) body.client_secret = form.elements.client_secret.value;
    const boxes = form.querySelectorAll('input[name="scopes"]');
    if (boxes.length) body.scopes = Array.from(boxes).filter((b) => b.checked).map((b) => b.value);
    const res = await api("PUT", "/api/v1/provider-apps/" + id, body);
    if (res.status === 200) { form.elements.client_secret.value = ""; form.elements.client_secret.placeholder = res.body.client_secret_set ? "stored — leave empty to keep" : "not set"; showErrors(form, []); toast("Provider app saved.", "ok"); }
    else showErrors(form, [{ path: "/app/" + id, message: errorText(res, "Not saved.") }]);
  }));

  // People: invitations, roles, members, password, sessions, sharing, the first owner.
  const invite = document.querySelector("[data-invite-form]");
  if (invite) invite.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(invite, []);
    const res = await api("POST", "/api/v1/invitations", { email: invite.email.value, role: invite.role.value });
    const out = document.getElementById("invite-result");
    if (res.status !== 201) { showErrors(invite, res.body.error && res.body.error.fields); toast(errorText(res, "The invitation was not sent."), "error"); return; }
    out.textContent = "";
    const p = document.createElement("p");
    p.textContent = res.body.emailed === true
      ? "Invitation emailed to " + res.body.email + ". The link, shown only this once:"
      : "No email was sent (SMTP is not configured, or it failed). Send " + res.body.email + " this link, shown only this once:";
    const code = document.createElement("code"); code.id = "invite-link"; code.textContent = res.body.link;
    out.append(p, code); out.hidden = false;
    invite.email.value = "";
  });
  document.querySelectorAll("[data-member-role]").forEach((sel) => sel.addEventListener("change", async () => {
    const res = await api("PUT", "/api/v1/workspaces/" + encodeURIComponent(sel.dataset.workspace) + "/members/" + encodeURIComponent(sel.dataset.memberRole), { role: sel.value });
    if (res.status === 200) toast("Role changed to " + sel.value + ".", "ok");
    else { toast(errorText(res, "The role was not changed."), "error"); location.reload(); }
  }));
  document.querySelectorAll("[data-remove-member]").forEach((b) => b.addEventListener("click", async () => {
    if (!window.confirm("Remove " + b.dataset.label + " from this workspace? Their connections stay.")) return;
    const res = await api("DELETE", "/api/v1/workspaces/" + encodeURIComponent(b.dataset.workspace) + "/members/" + encodeURIComponent(b.dataset.removeMember));
    if (res.status === 204) { flash("Member removed.", "ok"); location.reload(); }
    else toast(errorText(res, "The member was not removed."), "error");
  }));
  document.querySelectorAll("[data-withdraw-invitation]").forEach((b) => b.addEventListener("click", async () => {
    const res = await api("DELETE", "/api/v1/invitations/" + encodeURIComponent(b.dataset.withdrawInvitation));
    if (res.status === 204) { flash("Invitation withdrawn.", "ok"); location.reload(); }
    else toast(errorText(res, "The invitation was not withdrawn."), "error");
  }));
  const pw = document.querySelector("[data-password-form]");
  if (pw) pw.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const res = await api("POST", "/api/v1/auth/password/change", { current_password: pw.current_password.value, new_password: pw.new_password.value });
    if (res.status === 204) { location.href = "/login"; return; }
    showErrors(pw, res.body.error && res.body.error.fields);
    toast(errorText(res, "The password was not changed."), "error");
  });
  document.querySelectorAll("[data-sign-out-everywhere]").forEach((b) => b.addEventListener("click", async () => {
    const res = await api("POST", "/api/v1/auth/sign-out-everywhere");
    if (res.status === 200) { location.href = "/login"; return; }
    toast(errorText(res, "The sessions were not ended."), "error");
  }));
  const sharing = document.querySelector("[data-sharing-form]");
  if (sharing) {
    const sync = () => { sharing.permission.disabled = !sharing.shared.checked; };
    sharing.shared.addEventListener("change", sync); sync();
    sharing.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { visibility: sharing.shared.checked ? "shared" : "personal", permission: sharing.permission.value };
      const res = await api("PATCH", "/api/v1/connections/" + sharing.dataset.sharingForm, body);
      if (res.status === 200) { flash(body.visibility === "shared" ? "Shared with the team (" + body.permission + ")." : "Now personal: only you use it.", "ok"); location.reload(); }
      else toast(errorText(res, "Sharing was not changed."), "error");
    });
  }
  const firstOwner = document.querySelector("[data-first-owner-form]");
  if (firstOwner) firstOwner.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(firstOwner, []);
    const res = await api("POST", "/api/v1/users", { email: firstOwner.email.value, password: firstOwner.password.value, role: "owner", installation_admin: true });
    if (res.status === 201) { flash("Owner account created. Sign in with it from now on; keep the admin token for emergencies.", "ok"); location.reload(); return; }
    showErrors(firstOwner, res.body.error && res.body.error.fields);
    toast(errorText(res, "The account was not created."), "error");
  });

  // Pages opened from an emailed link: its token rides in the URL's fragment, which browsers never
  // send to a server. Returns the token (or "" after saying the link is incomplete), a function
  // that shows why the link cannot be used, and the error box.
  function linkToken(box, errId, missing) {
    const err = document.getElementById(errId);
    const fail = (m) => { box.hidden = true; err.textContent = m; err.hidden = false; };
    const token = decodeURIComponent(location.hash.replace(/^#/, ""));
    if (!token) fail(missing);
    return [token, fail, err];
  }

  // The invitation page: the token is in the fragment, never sent to the server in a URL.
  const summary = document.querySelector("[data-invite-summary]");
  if (summary) (async () => {
    const [token, fail, err] = linkToken(summary, "invite-error", "This page opens from an invitation link; the link you followed is incomplete.");
    if (!token) return;
    const res = await send("POST", "/api/v1/invitations/lookup", { token });
    if (res.status !== 200) { fail(errorText(res, "This invitation cannot be used.")); return; }
    const inv = res.body;
    summary.textContent = "You are invited to the workspace \u201c" + inv.workspace + "\u201d as " + inv.role + " (" + inv.email + ").";
    const form = document.querySelector("[data-accept-form]");
    if (inv.account_exists) {
      document.getElementById("invite-existing").hidden = false;
      form.querySelectorAll("[data-new-only]").forEach((e) => { e.hidden = true; });
      form.password.autocomplete = "current-password";
    }
    form.hidden = false;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      showErrors(form, []);
      const r = await send("POST", "/api/v1/invitations/accept", { token, password: form.password.value, display_name: form.display_name.value || null });
      if (r.status === 200) { history.replaceState(null, "", "/invite"); location.href = "/"; return; }
      showErrors(form, r.body.error && r.body.error.fields);
      fail(errorText(r, "The invitation was not accepted."));
      if (r.status === 422) { err.hidden = false; summary.hidden = false; }
    });
  })();

  const ssoForm = document.querySelector("[data-sso-form]");
  if (ssoForm) ssoForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(ssoForm, []);
    const body = { issuer: ssoForm.issuer.value, client_id: ssoForm.client_id.value, token_auth: ssoForm.token_auth.value, allow_signup: ssoForm.allow_signup.checked };
    if (ssoForm.client_secret.value) body.client_secret = ssoForm.client_secret.value;
    const res = await api("PUT", "/api/v1/admin/sso", body);
    if (res.status === 200) { ssoForm.client_secret.value = ""; ssoForm.client_secret.placeholder = "stored — leave empty to keep"; toast("Single sign-on saved.", "ok"); return; }
    showErrors(ssoForm, (res.body.error && res.body.error.fields) || [{ path: "/issuer", message: errorText(res, "Not saved.") }]);
  });

  // The client portal: open a request link, connect what a request asks for.
  const joinBox = document.querySelector("[data-request-join]");
  if (joinBox) (async () => {
    const [token, fail] = linkToken(joinBox, "join-error", "This page opens from the link in a connection request email; the link you followed is incomplete.");
    if (!token) return;
    const res = await send("POST", "/api/v1/connection-requests/join", { token });
    if (res.status === 200) { history.replaceState(null, "", "/portal/join"); location.href = "/portal"; return; }
    fail(errorText(res, "This link cannot be used."));
  })();
  document.querySelectorAll("[data-request-connect]").forEach((b) => b.addEventListener("click", () => {
    const id = b.dataset.requestConnect;
    oauthPopup(id, (returnTo) => api("POST", "/api/v1/connection-requests/" + encodeURIComponent(id) + "/connect", returnTo ? { return_to: returnTo } : {}));
  }));

  document.querySelectorAll("[data-portal-refresh]").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    const res = await api("POST", "/api/v1/connections/" + encodeURIComponent(b.dataset.portalRefresh) + "/refresh");
    b.disabled = false;
    if (res.status === 200) { flash("Connection refreshed.", "ok"); location.reload(); return; }
    toast("Failed to refresh connection. You may need to reconnect.", "error");
  }));
  document.querySelectorAll("[data-portal-revoke]").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    const res = await api("POST", "/api/v1/connections/" + encodeURIComponent(b.dataset.portalRevoke) + "/revoke");
    b.disabled = false;
    const d = b.closest("dialog"); if (d) d.close();
    if (res.status === 200) { flash("Connection revoked. Workflows using this connection will pause until reconnected.", "ok"); location.reload(); return; }
    toast(errorText(res, "The connection was not revoked."), "error");
  }));

  const linkForm = document.querySelector("[data-email-link-form]");
  if (linkForm) linkForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const res = await send("POST", "/api/v1/auth/email-link", { email: linkForm.email.value });
    const out = linkForm.querySelector("[data-email-link-sent]");
    out.textContent = res.status === 202 ? res.body.note : errorText(res, "No link was sent.");
    out.hidden = false;
  });
  const linkBox = document.querySelector("[data-email-link]");
  if (linkBox) (async () => {
    const [token, fail] = linkToken(linkBox, "link-error", "This page opens from the link in a sign-in email; the link you followed is incomplete.");
    if (!token) return;
    const res = await send("POST", "/api/v1/auth/email-link/use", { token });
    if (res.status === 200) { history.replaceState(null, "", "/login/link"); location.href = "/"; return; }
    fail(errorText(res, "This link cannot be used."));
  })();

  const impFile = document.querySelector("[data-import-file-form]");
  if (impFile) impFile.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(impFile, []);
    const f = impFile.elements.file.files[0];
    if (!f) { showErrors(impFile, [{ path: "/file", message: "Choose a file first." }]); return; }
    let body;
    try { body = JSON.parse(await f.text()); } catch (e) { showErrors(impFile, [{ path: "/file", message: "The file is not valid JSON: " + e.message }]); return; }
    const res = await api("POST", "/api/v1/admin/providers/import", body);
    if (res.status !== 200) { showErrors(impFile, [{ path: "/file", message: errorText(res, "Import failed.") }]); return; }
    const box = document.getElementById("import-report");
    box.textContent = "";
    const h = document.createElement("p");
    h.textContent = res.body.created + " created, " + res.body.updated + " updated, " + res.body.rejected + " rejected.";
    const table = document.createElement("table"); table.className = "table compact";
    const head = table.createTHead().insertRow();
    ["Entry", "Provider", "Outcome", "Why"].forEach((t) => { const th = document.createElement("th"); th.scope = "col"; th.textContent = t; head.appendChild(th); });
    const tb = table.createTBody();
    for (const r of res.body.report) {
      const row = tb.insertRow();
      row.dataset.outcome = r.outcome;
      [String(r.index), r.id || "—", r.outcome, r.reason ? r.field + ": " + r.reason : ""].forEach((t) => { row.insertCell().textContent = t; });
    }
    box.append(h, table); box.hidden = false;
  });
})();
