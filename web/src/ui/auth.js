// Log in / create an account: one form, two buttons (contract §8 hooks).

import { clear, h, icon } from "./dom.js";
import { ALERT, LEAF } from "./icons.js";

export class AuthView {
  /**
   * @param {object} o
   * @param {(username: string, password: string) => Promise<void>} o.login
   * @param {(username: string, password: string) => Promise<void>} o.register
   */
  constructor({ login, register }) {
    this.username = h("input", {
      name: "username",
      class: "input",
      autocomplete: "username",
      required: true,
      maxlength: "64",
      autocapitalize: "none",
      spellcheck: "false",
    });
    this.password = h("input", {
      name: "password",
      type: "password",
      class: "input",
      autocomplete: "current-password",
      required: true,
    });
    this.error = h("div", { class: "form-status", role: "alert" });
    this.loginButton = h("button", { type: "submit", class: "btn btn--primary btn--block", "data-testid": "login" }, "Log in");
    this.registerButton = h(
      "button",
      { type: "button", class: "btn btn--secondary btn--block", "data-testid": "register", onclick: () => this._run("register") },
      "Create account",
    );
    this.handlers = { login, register };
    const form = h(
      "form",
      {
        class: "auth__form",
        novalidate: true,
        onsubmit: (e) => {
          e.preventDefault();
          this._run("login");
        },
      },
      h("label", { class: "field" }, h("span", { class: "field__label" }, "Username"), this.username),
      h("label", { class: "field" }, h("span", { class: "field__label" }, "Password"), this.password),
      this.error,
      this.loginButton,
      h("div", { class: "divider" }, h("span", {}, "New here?")),
      this.registerButton,
    );
    this.el = h(
      "main",
      { class: "auth" },
      h(
        "section",
        { class: "auth__card card" },
        h("div", { class: "brand brand--large" }, icon(LEAF, "brand__mark"), h("span", {}, "Plantnotify")),
        h("h1", {}, "Know the moment your plant results are in"),
        h("p", { class: "muted" }, "Upload a photo of a sick plant. Our analyser takes a few minutes; we notify this browser and your phone as soon as it's done."),
        form,
      ),
    );
  }

  /** Show a message above the buttons (e.g. "your session ended"). */
  notice(text) {
    this._error(text, "info");
  }

  focus() {
    (this.username.value ? this.password : this.username).focus();
  }

  async _run(which) {
    const username = this.username.value.trim();
    const password = this.password.value;
    if (!username || !password) {
      this._error(`Enter a username and a password to ${which === "login" ? "log in" : "create your account"}.`);
      (username ? this.password : this.username).focus();
      return;
    }
    this._busy(true, which);
    this._error(null);
    try {
      await this.handlers[which](username, password);
      this.password.value = "";
    } catch (error) {
      this._error(explain(which, error));
    } finally {
      this._busy(false, which);
    }
  }

  _busy(busy, which) {
    this.loginButton.disabled = busy;
    this.registerButton.disabled = busy;
    const button = which === "login" ? this.loginButton : this.registerButton;
    button.textContent = busy ? (which === "login" ? "Logging in…" : "Creating account…") : which === "login" ? "Log in" : "Create account";
  }

  _error(text, kind = "error") {
    clear(this.error);
    this.error.className = "form-status";
    if (!text) return;
    this.error.classList.add(`form-status--${kind}`);
    this.error.append(icon(ALERT), h("span", {}, text));
  }
}

function explain(which, error) {
  if (which === "login" && error.status === 401) return "Wrong username or password. Check them, or create an account.";
  if (which === "register" && error.status === 409) return "That username is taken. Choose another one, or log in if it's yours.";
  if (error.status === 422) return `That doesn't work as a ${which === "login" ? "login" : "new account"}: ${error.message}`;
  return error.message;
}
