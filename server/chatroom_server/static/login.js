// The login form: a name first (the server says whether it is new), then its password,
// asked twice for a new name and checked against the server's minimum before anything
// is sent. `state` gets the password (to log in again after a drop); app.js handles
// login_ok.

import { $ } from "./view.js";

export function loginForm(state, conn) {
  function loginError(text) {
    $("login-error").textContent = text;
  }

  function onLoginSubmit(event) {
    event.preventDefault();
    loginError("");
    if (!conn.open) {
      loginError("Not connected to the server yet; it is being retried.");
      return;
    }
    const name = $("username").value.trim();
    if (name === "") {
      loginError("Enter a username.");
      $("username").focus();
      return;
    }
    if ($("password-row").hidden) {
      conn.send({ command: "login", username: name, id: "probe" }); // new or existing?
      return;
    }
    const pw = $("password").value;
    if (state.newUser) {
      if ([...pw].length < state.minPassword) {
        loginError(`Choose a password of at least ${state.minPassword} characters.`);
        $("password").focus();
        return;
      }
      if (pw !== $("password2").value) {
        loginError("The two passwords differ: type the same one twice.");
        $("password2").focus();
        return;
      }
    }
    state.password = pw;
    conn.send({ command: "login", username: name, password: pw, id: "login", features: ["rooms"] });
  }

  function askPassword(frame) {
    state.newUser = frame.new_user;
    $("username").value = frame.username;
    $("password-row").hidden = false;
    $("confirm-row").hidden = !frame.new_user;
    if (frame.new_user) {
      state.minPassword = frame.min_password ?? 8;
      const min = `${state.minPassword} characters or more`;
      $("password-label").textContent = `Choose a password for the new name ${frame.username} (${min})`;
      $("password").autocomplete = "new-password";
      $("login-button").textContent = "Register";
    } else {
      $("password-label").textContent = `Password for ${frame.username}`;
      $("login-button").textContent = "Log in";
    }
    $("password").focus();
  }

  function bind() {
    $("login-form").addEventListener("submit", onLoginSubmit);
    $("username").addEventListener("input", () => {
      // Another name: ask again whether it is new.
      $("password-row").hidden = true;
      $("confirm-row").hidden = true;
      $("login-button").textContent = "Continue";
    });
  }

  return { loginError, askPassword, bind };
}
