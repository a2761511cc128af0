// @ts-check
/**
 * `<advocacy-share>`: a signed-in customer's referral link, QR code, share buttons and rewards, on the merchant's
 * own site, read from the engine's API with the customer's short-lived token.
 *
 *   <script src="https://engine.example/static/widget/advocacy-share.js" defer></script>
 *   <advocacy-share api="https://engine.example" campaign="spring" token="eyJ…"></advocacy-share>
 *
 * The token comes from the `token` attribute, the `token` property, or a provider the element calls when it has
 * none or the one it has is about to expire or was refused (`token-provider="myShop.advocacyToken"`, a global
 * function, or the `tokenProvider` property). Text from the API only ever reaches the page as `textContent`; the
 * QR code is shown as an <img>, which cannot run script.
 *
 * Events (bubbling, composed): `advocacy-ready` {customerId, code, link}, `advocacy-idea-sent` {id},
 * `advocacy-error` {status, detail} with the API's own wording, for the merchant's developers.
 * @module
 */

import css from "./advocacy-share.css";
import {
  MAX_AUTO_RETRY_S,
  apiBase,
  kitPath,
  politeMessage,
  retryAfterSeconds,
  rewardLines,
  shareButtons,
  svgImageSource,
  tokenIsStale,
} from "./logic.js";

/** @typedef {import("./logic.js").Kit} Kit */
/** @typedef {string | {token: string} | null | undefined} ProvidedToken */
/** @typedef {() => ProvidedToken | Promise<ProvidedToken>} TokenProvider */
/** @typedef {number | "network" | "setup" | "signed-out"} FailureKind */

export const VERSION = typeof __WIDGET_VERSION__ === "string" ? __WIDGET_VERSION__ : "dev";

const DEFAULT_HEADING = "Share with friends";

/** A request or setup that failed, with what to tell the person and what to tell the developer. */
class WidgetFailure extends Error {
  /**
   * @param {FailureKind} kind
   * @param {string} detail
   * @param {number | null} [retryS]
   */
  constructor(kind, detail, retryS = null) {
    super(detail);
    this.kind = kind;
    this.retryS = retryS;
  }

  get polite() {
    return politeMessage(this.kind, this.retryS);
  }

  /** A person can usefully press "Try again" (not for an ended session or a setup mistake). */
  get retryable() {
    const kind = this.kind;
    return kind === "network" || kind === 409 || kind === 429 || (typeof kind === "number" && kind >= 500);
  }
}

/**
 * A DOM element with attributes and children; text is always set as text, never parsed as markup.
 *
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string>} [attributes]
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElementTagNameMap[K]}
 */
function h(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** @type {CSSStyleSheet | null} */
let sharedSheet = null;

/**
 * One constructed stylesheet shared by every widget on the page; a page whose Content-Security-Policy forbids
 * inline styles still applies it. Browsers without constructed sheets get a <style> element instead.
 *
 * @param {ShadowRoot} root
 */
function adoptStyles(root) {
  try {
    sharedSheet ??= new CSSStyleSheet();
    if (sharedSheet.cssRules.length === 0) sharedSheet.replaceSync(css);
    root.adoptedStyleSheets = [sharedSheet];
  } catch {
    root.prepend(h("style", {}, [css]));
  }
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "widget-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * @param {string} path a dotted name under `globalThis`, such as `myShop.advocacyToken`
 * @returns {TokenProvider | null}
 */
function globalFunction(path) {
  /** @type {any} */
  let value = globalThis;
  for (const part of path.split(".")) {
    if (value == null) return null;
    value = value[part];
  }
  return typeof value === "function" ? value : null;
}

export class AdvocacyShare extends HTMLElement {
  static observedAttributes = ["api", "campaign", "token", "token-provider", "heading"];
  static version = VERSION;

  /** @type {string | null} */
  #token = null;
  /** @type {TokenProvider | null} */
  #tokenProvider = null;
  /** @type {Kit | null} */
  #kit = null;
  /** @type {string | null} */
  #customerId = null;
  #generation = 0;
  #loadQueued = false;
  #ideaKey = "";
  /** @type {WidgetFailure | null} */
  #failure = null;
  #ui;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    const ui = {
      card: h("section", { class: "card", part: "card", "aria-labelledby": "heading", "aria-busy": "true" }),
      heading: h("h2", { id: "heading", class: "heading", part: "heading" }, [DEFAULT_HEADING]),
      loading: h("p", { class: "loading" }, ["Loading your referral link…"]),
      body: h("div", { class: "body", hidden: "" }),
      rewards: h("dl", { class: "rewards" }),
      link: h("input", { id: "link", class: "link", part: "link", type: "text", readonly: "", spellcheck: "false" }),
      copy: h("button", { type: "button", class: "button copy", part: "button" }, ["Copy link"]),
      code: h("span"),
      qr: h("img", { class: "qr", part: "qr", alt: "QR code of your referral link", width: "152", height: "152" }),
      channels: h("ul", { class: "channels", "aria-label": "Share on" }),
      ideaForm: h("form", { class: "idea", novalidate: "" }),
      ideaText: h("textarea", { id: "idea-text", name: "text", rows: "3", maxlength: "5000" }),
      ideaSend: h("button", { type: "submit", class: "button", part: "button" }, ["Send idea"]),
      copied: h("p", { class: "status copied", role: "status", "aria-live": "polite" }),
      status: h("p", { class: "status", role: "status", "aria-live": "polite" }),
      errorRow: h("div", { class: "error-row", hidden: "" }),
      error: h("p", { class: "error", role: "alert" }),
      retry: h("button", { type: "button", class: "button retry", part: "button" }, ["Try again"]),
    };
    this.#ui = ui;
    ui.ideaForm.append(
      h("label", { for: "idea-text" }, ["Got an idea for us?"]),
      ui.ideaText,
      ui.ideaSend,
    );
    ui.body.append(
      ui.rewards,
      h("div", { class: "share" }, [
        h("div", {}, [
          h("label", { class: "link-label", for: "link" }, ["Your link"]),
          h("div", { class: "link-row" }, [ui.link, ui.copy]),
          h("p", { class: "code" }, ["Code ", ui.code]),
          ui.copied,
        ]),
        ui.qr,
      ]),
      ui.channels,
      ui.ideaForm,
    );
    ui.errorRow.append(ui.error, ui.retry);
    ui.card.append(ui.heading, ui.loading, ui.body, ui.errorRow, ui.status);
    root.append(ui.card);
    adoptStyles(root);

    ui.copy.addEventListener("click", () => void this.#copyLink());
    ui.link.addEventListener("focus", () => ui.link.select());
    ui.ideaForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.#sendIdea();
    });
    ui.retry.addEventListener("click", () => this.reload());
  }

  connectedCallback() {
    for (const name of /** @type {const} */ (["token", "tokenProvider"])) {
      // a page may set these before this script defined the element: the value sits on the instance, hiding the setter
      if (Object.hasOwn(this, name)) {
        const value = this[name];
        delete this[name];
        this[name] = /** @type {any} */ (value);
      }
    }
    if (!this.#kit) this.#queueLoad(); // moving a shown widget in the page keeps what it shows
  }

  disconnectedCallback() {
    this.#generation++;
  }

  /**
   * @param {string} name
   * @param {string | null} old
   * @param {string | null} value
   */
  attributeChangedCallback(name, old, value) {
    if (old === value) return;
    if (name === "heading") {
      this.#ui.heading.textContent = value || DEFAULT_HEADING;
      return;
    }
    if (name === "token") this.#token = null; // the newest write wins, attribute or property
    if (name === "token" && this.#kit) return; // a fresh token for the same person: nothing to reload
    this.#queueLoad();
  }

  /** The customer token; setting it (say, after the merchant's page refreshed it) does not reload a shown kit. */
  get token() {
    return this.#token ?? this.getAttribute("token");
  }

  set token(value) {
    this.#token = value || null;
    if (!this.#kit) this.#queueLoad();
  }

  /** A function returning a fresh token (or a promise of one, or `{token}` as `POST /v1/customer-tokens` answers). */
  get tokenProvider() {
    return this.#tokenProvider;
  }

  set tokenProvider(value) {
    this.#tokenProvider = typeof value === "function" ? value : null;
    if (!this.#kit) this.#queueLoad();
  }

  /** What the widget shows, for tests and the merchant's scripts: the customer, their code and link, or the error. */
  get state() {
    return {
      customerId: this.#customerId,
      code: this.#kit?.code ?? null,
      link: this.#kit?.link ?? null,
      error: this.#failure ? { kind: this.#failure.kind, message: this.#failure.polite } : null,
    };
  }

  /** Load the kit again from scratch (the "Try again" button does this). */
  reload() {
    this.#queueLoad();
  }

  #queueLoad() {
    if (this.#loadQueued) return;
    this.#loadQueued = true;
    queueMicrotask(() => {
      this.#loadQueued = false;
      if (this.isConnected) void this.#load();
    });
  }

  async #load() {
    const generation = ++this.#generation;
    const ui = this.#ui;
    this.#failure = null;
    this.#kit = null;
    ui.card.setAttribute("aria-busy", "true");
    ui.loading.hidden = false;
    ui.body.hidden = true;
    ui.errorRow.hidden = true;
    try {
      const base = this.#base();
      const campaign = this.getAttribute("campaign");
      if (!campaign) throw new WidgetFailure("setup", "the campaign attribute is missing: set it to the campaign's id");
      const me = await this.#request("GET", `${base}/v1/me`);
      if (generation !== this.#generation) return;
      if (me?.kind !== "customer" || typeof me.customer_id !== "string") {
        throw new WidgetFailure(403, "the widget needs a customer token, never a marketer API key");
      }
      /** @type {Kit} */
      const kit = await this.#request("GET", kitPath(base, me.customer_id, campaign));
      if (generation !== this.#generation) return;
      this.#customerId = me.customer_id;
      this.#kit = kit;
      this.#show(kit);
      this.#emit("advocacy-ready", { customerId: me.customer_id, code: kit.code, link: kit.link });
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#fail(error);
    } finally {
      if (generation === this.#generation) {
        ui.loading.hidden = true;
        ui.card.setAttribute("aria-busy", "false");
      }
    }
  }

  #base() {
    try {
      return apiBase(this.getAttribute("api"));
    } catch (error) {
      throw new WidgetFailure("setup", error instanceof Error ? error.message : String(error));
    }
  }

  /** @param {Kit} kit */
  #show(kit) {
    const ui = this.#ui;
    ui.rewards.replaceChildren(
      ...rewardLines(kit).flatMap(({ label, text }) => [h("dt", {}, [label]), h("dd", {}, [text])]),
    );
    ui.rewards.hidden = ui.rewards.childElementCount === 0;
    ui.link.value = kit.link;
    ui.code.textContent = kit.code;
    void this.#drawQr(kit.qr_url);
    ui.channels.replaceChildren(
      ...shareButtons(kit.messages).map(({ channel, label, href, newTab }) => {
        const anchor = h("a", { class: "channel", part: "channel", href, "data-channel": channel }, [label]);
        if (newTab) {
          anchor.target = "_blank";
          anchor.rel = "noopener noreferrer";
          anchor.append(h("span", { class: "visually-hidden" }, [" (opens in a new tab)"]));
        }
        return h("li", {}, [anchor]);
      }),
    );
    ui.channels.hidden = ui.channels.childElementCount === 0;
    ui.body.hidden = false;
  }

  /**
   * The QR code, fetched from the API (which `connect-src` already allows and the browser caches for a day) and
   * shown as a `data:` image, so a page whose `img-src` allows only `data:` still shows it. The link and the
   * buttons work without it, so a failure only leaves it out.
   *
   * @param {string} url
   */
  async #drawQr(url) {
    const qr = this.#ui.qr;
    qr.hidden = true;
    try {
      const response = await fetch(url, { mode: "cors", credentials: "omit", referrerPolicy: "no-referrer" });
      if (!response.ok) return;
      const svg = await response.text();
      if (this.#kit?.qr_url !== url) return; // a newer kit is on show
      qr.src = svgImageSource(svg);
      qr.hidden = false;
    } catch {
      // no picture; everything else stands
    }
  }

  /** @param {unknown} error */
  #fail(error) {
    const failure =
      error instanceof WidgetFailure
        ? error
        : new WidgetFailure("network", error instanceof Error ? error.message : String(error));
    this.#failure = failure;
    const ui = this.#ui;
    ui.error.textContent = failure.polite;
    ui.retry.hidden = !failure.retryable;
    ui.errorRow.hidden = false;
    if (failure.kind === "setup") console.warn(`<advocacy-share>: ${failure.message}`);
    this.#emit("advocacy-error", { status: failure.kind, detail: failure.message });
  }

  /**
   * @param {string} text
   * @param {HTMLElement} [status] the live region next to what the person just did
   */
  #say(text, status = this.#ui.status) {
    status.textContent = "";
    // a new text node in a later task, so screen readers announce "Link copied" again on a second copy
    setTimeout(() => {
      status.textContent = text;
    }, 50);
  }

  async #copyLink() {
    const link = this.#kit?.link;
    if (!link) return;
    let copied = false;
    try {
      await navigator.clipboard.writeText(link);
      copied = true;
    } catch {
      this.#ui.link.focus();
      this.#ui.link.select();
      copied = document.execCommand("copy"); // older browsers and pages without clipboard permission
    }
    this.#say(copied ? "Link copied" : "Press Ctrl+C (or ⌘C) to copy the selected link", this.#ui.copied);
  }

  async #sendIdea() {
    const ui = this.#ui;
    const text = ui.ideaText.value.trim();
    if (!text) {
      this.#say("Write your idea first, then send it.");
      ui.ideaText.focus();
      return;
    }
    if (!this.#customerId) return;
    this.#ideaKey ||= newIdempotencyKey(); // the same key for every retry of this idea: sent at most once
    ui.ideaSend.disabled = true;
    ui.errorRow.hidden = true;
    this.#failure = null;
    try {
      const base = this.#base();
      const event = await this.#request(
        "POST",
        `${base}/v1/customers/${encodeURIComponent(this.#customerId)}/responses`,
        { kind: "idea", text, campaign_id: this.getAttribute("campaign") },
        this.#ideaKey,
      );
      this.#ideaKey = "";
      ui.ideaText.value = "";
      this.#say("Thanks! Your idea was sent.");
      this.#emit("advocacy-idea-sent", { id: event?.id ?? null });
    } catch (error) {
      this.#fail(error);
      ui.retry.hidden = true; // the form keeps the text: sending again is the retry
    } finally {
      ui.ideaSend.disabled = false;
    }
  }

  /**
   * A token to send: the one held, unless it is missing, about to expire, or was just refused; then the provider's.
   *
   * @param {boolean} refused
   * @returns {Promise<string>}
   */
  async #currentToken(refused) {
    const held = this.token;
    if (held && !refused && !tokenIsStale(held, Date.now())) return held;
    const provider = this.#provider();
    if (provider) {
      const given = await provider();
      const token = typeof given === "string" ? given : given?.token;
      if (token) {
        this.#token = token;
        return token;
      }
    }
    if (held && !refused) return held; // stale by our clock, but the server's clock decides
    if (!held) throw new WidgetFailure("signed-out", "no customer token: set the token attribute or a token provider");
    throw new WidgetFailure(401, "the customer token was refused and the provider gave no new one");
  }

  #provider() {
    if (this.#tokenProvider) return this.#tokenProvider;
    const name = this.getAttribute("token-provider");
    return name ? globalFunction(name) : null;
  }

  /**
   * One API call with the customer's token. A 401 asks the provider for a new token and tries once more; a 429
   * waits out a short `Retry-After` once; anything else that is not 2xx becomes a `WidgetFailure`.
   *
   * @param {"GET" | "POST"} method
   * @param {string} url
   * @param {unknown} [body]
   * @param {string} [idempotencyKey]
   * @returns {Promise<any>}
   */
  async #request(method, url, body, idempotencyKey) {
    let refused = false;
    let waited = false;
    for (;;) {
      const token = await this.#currentToken(refused);
      /** @type {Record<string, string>} */
      const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
      /** @type {Response} */
      let response;
      try {
        response = await fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          mode: "cors",
          credentials: "omit",
          cache: "no-store",
          referrerPolicy: "no-referrer",
        });
      } catch (error) {
        throw new WidgetFailure("network", error instanceof Error ? error.message : String(error));
      }
      if (response.ok) return response.status === 204 ? null : response.json();
      const detail = await problemDetail(response);
      if (response.status === 401 && !refused && this.#provider()) {
        refused = true;
        continue;
      }
      if (response.status === 429) {
        const retryS = retryAfterSeconds(response.headers.get("Retry-After"), Date.now());
        if (!waited && retryS !== null && retryS <= MAX_AUTO_RETRY_S) {
          waited = true;
          this.#say(`Busy just now, trying again in ${retryS} ${retryS === 1 ? "second" : "seconds"}…`);
          await sleep(retryS * 1000);
          continue;
        }
        throw new WidgetFailure(429, detail, retryS);
      }
      throw new WidgetFailure(response.status, detail);
    }
  }

  /**
   * @param {string} type
   * @param {Record<string, unknown>} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

/**
 * The API's own words about a failure (an RFC 9457 problem's `detail`), for the developer event only.
 *
 * @param {Response} response
 */
async function problemDetail(response) {
  try {
    const problem = await response.json();
    return typeof problem?.detail === "string" ? problem.detail : `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

if (!customElements.get("advocacy-share")) customElements.define("advocacy-share", AdvocacyShare);
