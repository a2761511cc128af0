// Run with `npm test` (node's built-in runner); tests/e2e/test_widget_node.py runs it in the Python suite.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  apiBase,
  kitPath,
  politeMessage,
  retryAfterSeconds,
  rewardLines,
  shareButtons,
  svgImageSource,
  tokenExpiry,
  tokenIsStale,
} from "../src/logic.js";

const NOW = Date.parse("2026-03-01T12:00:00Z");

/** @param {object} payload */
function jwt(payload) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", kid: "k1" })}.${part(payload)}.signature`;
}

test("share buttons follow a fixed channel order and leave out copy_link and channels without a link", () => {
  const buttons = shareButtons([
    { channel: "x", text: "t", share_url: "https://twitter.com/intent/tweet?text=t" },
    { channel: "copy_link", text: "t", share_url: null },
    { channel: "whatsapp", text: "t", share_url: "https://wa.me/?text=t" },
    { channel: "facebook", text: "t", share_url: null },
    { channel: "email", text: "t", share_url: "mailto:?subject=s&body=t" },
  ]);
  assert.deepEqual(
    buttons.map((b) => [b.channel, b.label, b.newTab]),
    [
      ["whatsapp", "WhatsApp", true],
      ["email", "Email", false],
      ["x", "X", true],
    ],
  );
  assert.equal(buttons[1].href, "mailto:?subject=s&body=t");
});

test("a share link with a script or data scheme never becomes a button", () => {
  const buttons = shareButtons([
    { channel: "whatsapp", text: "t", share_url: "javascript:alert(1)" },
    { channel: "x", text: "t", share_url: "data:text/html,<script>alert(1)</script>" },
    { channel: "linkedin", text: "t", share_url: "not a url" },
    { channel: "sms", text: "t", share_url: "sms:?&body=hi" },
  ]);
  assert.deepEqual(buttons.map((b) => b.channel), ["sms"]);
});

test("retry-after is read as seconds or as an HTTP date, and unreadable values give null", () => {
  assert.equal(retryAfterSeconds("7", NOW), 7);
  assert.equal(retryAfterSeconds(" 0 ", NOW), 0);
  assert.equal(retryAfterSeconds(new Date(NOW + 90_500).toUTCString(), NOW), 90);
  assert.equal(retryAfterSeconds(new Date(NOW - 5_000).toUTCString(), NOW), 0);
  assert.equal(retryAfterSeconds("soon", NOW), null);
  assert.equal(retryAfterSeconds("-3", NOW), null);
  assert.equal(retryAfterSeconds(null, NOW), null);
});

test("a token's expiry is read from its payload and a token close to it counts as stale", () => {
  const exp = NOW / 1000 + 60;
  const token = jwt({ sub: "ada", exp });
  assert.equal(tokenExpiry(token), exp);
  assert.equal(tokenIsStale(token, NOW), false);
  assert.equal(tokenIsStale(token, NOW + 45_000), true);
  assert.equal(tokenIsStale(token, NOW + 61_000), true);
});

test("a token that is not a readable JWT has no known expiry and is never called stale", () => {
  for (const token of ["opaque", "a.%%%.c", jwt({ sub: "ada" })]) {
    assert.equal(tokenExpiry(token), null);
    assert.equal(tokenIsStale(token, NOW), false);
  }
});

test("the api attribute must be an absolute http(s) address and loses its trailing slashes", () => {
  assert.equal(apiBase("https://engine.example/"), "https://engine.example");
  assert.equal(apiBase("https://shop.example/engine//"), "https://shop.example/engine");
  assert.throws(() => apiBase(null), /api attribute is missing/);
  assert.throws(() => apiBase("javascript:alert(1)"), /http\(s\)/);
  assert.throws(() => apiBase("/relative"));
});

test("the kit path encodes the customer and campaign ids", () => {
  assert.equal(
    kitPath("https://e.example", "cust/42?x", "spring&summer"),
    "https://e.example/v1/customers/cust%2F42%3Fx/kit?campaign_id=spring%26summer",
  );
});

test("the QR code becomes an image data URL, so markup inside it is never parsed into the page", () => {
  const source = svgImageSource('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
  assert.ok(source.startsWith("data:image/svg+xml;charset=utf-8,"));
  assert.ok(!source.includes("<"));
  assert.equal(decodeURIComponent(source.split(",")[1]).includes("<script>"), true);
});

test("failures are told politely, with the wait after a 429 when the server gave one", () => {
  assert.match(politeMessage(429, 1), /in 1 second\.$/);
  assert.match(politeMessage(429, 12), /in 12 seconds\.$/);
  assert.match(politeMessage(429), /in a moment/);
  assert.match(politeMessage("network"), /couldn't reach/);
  assert.match(politeMessage(401), /session has ended/);
  assert.match(politeMessage(500), /went wrong/);
});

test("reward lines leave out a side the campaign does not reward", () => {
  assert.deepEqual(rewardLines({ reward_for_you: "10 EUR credit", reward_for_friend: "" }), [
    { label: "For you", text: "10 EUR credit" },
  ]);
});
