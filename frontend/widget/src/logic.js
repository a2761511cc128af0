// @ts-check
/**
 * The widget's pure rules: no DOM, no fetch, so `node --test` can check them and the element stays a thin shell.
 * @module
 */

/**
 * @typedef {{channel: string, subject?: string | null, text: string, share_url?: string | null}} KitMessage
 * @typedef {{id: string, title: string, url: string, kind?: string}} KitAsset
 * @typedef {{
 *   customer_id: string, code: string, link: string, qr_url: string, messages: KitMessage[],
 *   reward_for_you: string, reward_for_friend: string, friend_offer?: string, assets?: KitAsset[],
 *   segment?: string | null, locale?: string,
 * }} Kit
 * @typedef {{channel: string, label: string, href: string, newTab: boolean}} ShareButton
 */

/** The order and names of the share buttons; `copy_link` is the copy button, so it is not listed. */
export const CHANNEL_LABELS = Object.freeze({
  whatsapp: "WhatsApp",
  email: "Email",
  sms: "Text message",
  x: "X",
  linkedin: "LinkedIn",
  facebook: "Facebook",
});

const WEB_SCHEMES = new Set(["https:", "http:"]);
const APP_SCHEMES = new Set(["mailto:", "sms:"]);

/** The longest wait the widget sits out by itself after a 429; longer ones are shown and left to the person. */
export const MAX_AUTO_RETRY_S = 60;

/**
 * The share buttons to show, in a fixed order, for channels the widget knows and links it trusts.
 *
 * A share URL comes from the merchant's kit templates; anything but http(s), mailto: and sms: (`javascript:`,
 * `data:`) is dropped, so a template can never turn a button into script.
 *
 * @param {readonly KitMessage[]} messages
 * @returns {ShareButton[]}
 */
export function shareButtons(messages) {
  /** @type {ShareButton[]} */
  const buttons = [];
  for (const [channel, label] of Object.entries(CHANNEL_LABELS)) {
    const message = messages.find((m) => m.channel === channel);
    const href = message?.share_url;
    if (!href) continue;
    let url;
    try {
      url = new URL(href);
    } catch {
      continue;
    }
    if (WEB_SCHEMES.has(url.protocol)) buttons.push({ channel, label, href: url.href, newTab: true });
    else if (APP_SCHEMES.has(url.protocol)) buttons.push({ channel, label, href, newTab: false });
  }
  return buttons;
}

/**
 * Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or null when absent or unreadable.
 *
 * @param {string | null | undefined} value
 * @param {number} nowMs
 * @returns {number | null}
 */
export function retryAfterSeconds(value, nowMs) {
  if (value == null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  if (!/^[A-Za-z]{3}, /.test(text)) return null; // an HTTP date starts with the day's name; "-3" is no date
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/**
 * When a JWT expires (epoch seconds), read without checking its signature (the server checks it); null if unreadable.
 *
 * @param {string} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const payload = JSON.parse(atob(base64));
    return typeof payload?.exp === "number" ? payload.exp : null;
  } catch {
    return null;
  }
}

/**
 * Whether to ask the provider for a new token before a request: expired, or expiring within `marginS` seconds.
 *
 * @param {string} token
 * @param {number} nowMs
 * @param {number} [marginS]
 */
export function tokenIsStale(token, nowMs, marginS = 20) {
  const exp = tokenExpiry(token);
  return exp !== null && exp * 1000 - nowMs < marginS * 1000;
}

/**
 * The API's origin and path prefix without a trailing slash; throws on anything but an absolute http(s) URL.
 *
 * @param {string | null} api
 * @returns {string}
 */
export function apiBase(api) {
  if (!api) throw new Error("the api attribute is missing: set it to the engine's address (https://engine.example)");
  const url = new URL(api);
  if (!WEB_SCHEMES.has(url.protocol)) throw new Error(`the api attribute must be an http(s) address, not ${api}`);
  return url.href.replace(/\/+$/, "");
}

/**
 * The kit's address for one customer and campaign, every value percent-encoded.
 *
 * @param {string} base
 * @param {string} customerId
 * @param {string} campaignId
 */
export function kitPath(base, customerId, campaignId) {
  return `${base}/v1/customers/${encodeURIComponent(customerId)}/kit?campaign_id=${encodeURIComponent(campaignId)}`;
}

/**
 * The QR code as an `<img>` source: an SVG loaded as an image runs no script and loads nothing else.
 *
 * @param {string} svg
 */
export function svgImageSource(svg) {
  return `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
}

/**
 * What to tell the person about a failed request, in plain words; the API's own detail goes to the developer event.
 *
 * @param {number | "network" | "signed-out" | "setup"} status
 * @param {number | null} [retryS]
 * @returns {string}
 */
export function politeMessage(status, retryS = null) {
  if (status === "setup") return "This share box isn't set up yet.";
  if (status === "signed-out") return "Sign in to see your referral link.";
  if (status === "network") return "We couldn't reach the referral service. Check your connection and try again.";
  if (status === 401) return "Your session has ended. Reload the page to see your referral link again.";
  if (status === 403) return "This sign-in can't show a referral link here.";
  if (status === 404) return "This referral programme isn't available right now.";
  if (status === 409) return "That is still being sent. Try again in a moment.";
  if (status === 422) return "That couldn't be sent as it is. Please check it and try again.";
  if (status === 429) {
    return retryS === null
      ? "Lots of requests just now. Please try again in a moment."
      : `Lots of requests just now. Please try again in ${retryS} ${retryS === 1 ? "second" : "seconds"}.`;
  }
  if (status === 503) return "The referral service is busy. Please try again in a moment.";
  return "Something went wrong on our side. Please try again later.";
}

/**
 * The rewards in words, for the person and for their friend, leaving out sides the campaign does not reward.
 *
 * @param {Pick<Kit, "reward_for_you" | "reward_for_friend">} kit
 * @returns {{label: string, text: string}[]}
 */
export function rewardLines(kit) {
  const lines = [];
  if (kit.reward_for_you) lines.push({ label: "For you", text: kit.reward_for_you });
  if (kit.reward_for_friend) lines.push({ label: "For your friend", text: kit.reward_for_friend });
  return lines;
}
