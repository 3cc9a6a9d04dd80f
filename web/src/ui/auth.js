// Log in / create an account: one form, two buttons (contract §8 hooks).

import { t } from "../i18n.js";
import { clear, h, icon } from "./dom.js";
import { ALERT, LEAF } from "./icons.js";

// The server's rules (api/schemas.py), checked here first so a farmer reads what to change
// before anything is sent.
const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$/;
const PASSWORD_MIN = 8;

/** The catalog key of what is wrong with a new account, or null when it looks fine. */
export function checkNewAccount(username, password) {
  if (!USERNAME_RE.test(username)) return username.length < 3 ? "auth.usernameTooShort" : "auth.usernameChars";
  if (password.length < PASSWORD_MIN) return "auth.passwordTooShort";
  if (password.toLowerCase() === username.toLowerCase()) return "auth.passwordIsUsername";
  return null;
}

export class AuthView {
  /**
   * @param {object} o
   * @param {(username: string, password: string) => Promise<void>} o.login
   * @param {(username: string, password: string) => Promise<void>} o.register
   */
  constructor({ login, register }) {
    this.username = h("input", {
      name: "username",
      id: "auth-username",
      class: "input",
      autocomplete: "username",
      required: true,
      maxlength: "64",
      autocapitalize: "none",
      spellcheck: "false",
      "aria-describedby": "auth-username-hint",
    });
    this.password = h("input", {
      name: "password",
      id: "auth-password",
      type: "password",
      class: "input",
      autocomplete: "current-password",
      required: true,
      "aria-describedby": "auth-password-hint",
    });
    this.error = h("div", { class: "form-status", role: "alert", "data-testid": "auth-message" });
    this.loginButton = h("button", { type: "submit", class: "btn btn--primary btn--block", "data-testid": "login" }, t("auth.login"));
    this.registerButton = h(
      "button",
      { type: "button", class: "btn btn--secondary btn--block", "data-testid": "register", onclick: () => this._run("register") },
      t("auth.register"),
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
      h(
        "div",
        { class: "field" },
        h("label", { class: "field__label", for: "auth-username" }, t("auth.username")),
        this.username,
        h("span", { class: "field__hint", id: "auth-username-hint" }, t("auth.usernameHint")),
      ),
      h(
        "div",
        { class: "field" },
        h("label", { class: "field__label", for: "auth-password" }, t("auth.password")),
        this.password,
        h("span", { class: "field__hint", id: "auth-password-hint" }, t("auth.passwordHint")),
      ),
      this.error,
      this.loginButton,
      h("div", { class: "divider" }, h("span", {}, t("auth.newHere"))),
      this.registerButton,
    );
    this.el = h(
      "main",
      { class: "auth" },
      h(
        "section",
        { class: "auth__card card" },
        h("div", { class: "brand brand--large" }, icon(LEAF, "brand__mark"), h("span", {}, t("app.name"))),
        h("h1", {}, t("auth.title")),
        h("p", { class: "muted" }, t("auth.intro")),
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
      this._error(t(which === "login" ? "auth.missingLogin" : "auth.missingRegister"));
      (username ? this.password : this.username).focus();
      return;
    }
    if (which === "register") {
      const problem = checkNewAccount(username, password);
      if (problem) {
        this._error(t(problem));
        (problem.startsWith("auth.username") ? this.username : this.password).focus();
        return;
      }
    }
    this._busy(true, which);
    this._error(null);
    try {
      await this.handlers[which](username, password);
      this.password.value = "";
    } catch (error) {
      this._error(error.message);
    } finally {
      this._busy(false, which);
    }
  }

  _busy(busy, which) {
    this.loginButton.disabled = busy;
    this.registerButton.disabled = busy;
    const button = which === "login" ? this.loginButton : this.registerButton;
    button.textContent = busy ? t(which === "login" ? "auth.loggingIn" : "auth.registering") : t(which === "login" ? "auth.login" : "auth.register");
  }

  _error(text, kind = "error") {
    clear(this.error);
    this.error.className = "form-status";
    if (!text) return;
    this.error.classList.add(`form-status--${kind}`);
    this.error.append(icon(ALERT), h("span", {}, text));
  }
}
