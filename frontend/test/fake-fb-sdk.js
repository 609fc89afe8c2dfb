// A stand-in for Meta's JS SDK, for the browser test. Classic script, like the real one.
//
// FB.init records its options; FB.login records its options and then plays the part of the
// Embedded Signup popup: it posts the session-info `message` event (from this page's own
// origin — a test cannot fake facebook.com, hence the component's `message-origin`
// attribute) and calls the login callback, as Meta does.
//
// Scenario, read at login time from window.FAKE_FB (set it before clicking):
//   { scenario: 'finish' | 'finish_only_waba' | 'cancel' | 'error',
//     code, waba_id, phone_number_id, current_step, error_message, error_id,
//     order: 'message-first' (default) | 'code-first', delay_ms (default 50) }
(function () {
  'use strict';
  const calls = { init: [], login: [] };
  const settings = () => window.FAKE_FB || {};

  function post(event, data) {
    // Meta sends a JSON string; keep it that way.
    window.postMessage(JSON.stringify({ type: 'WA_EMBEDDED_SIGNUP', event, data, version: '3' }), '*');
  }

  window.FB = {
    init(opts) {
      calls.init.push(JSON.parse(JSON.stringify(opts)));
    },
    login(callback, opts) {
      calls.login.push(JSON.parse(JSON.stringify(opts)));
      const s = settings();
      const delay = s.delay_ms ?? 50;
      const scenario = s.scenario || 'finish';
      let message = null;
      let response = { authResponse: null, status: 'unknown' };
      if (scenario === 'finish') {
        message = ['FINISH', { waba_id: s.waba_id, phone_number_id: s.phone_number_id }];
      } else if (scenario === 'finish_only_waba') {
        message = ['FINISH_ONLY_WABA', { waba_id: s.waba_id }];
      } else if (scenario === 'cancel') {
        message = ['CANCEL', { current_step: s.current_step || 'PHONE_NUMBER_SETUP' }];
      } else if (scenario === 'error') {
        message = ['CANCEL', {
          error_message: s.error_message || 'Something went wrong',
          error_id: s.error_id || '524126',
          session_id: 'f34b51dab5e0498',
          timestamp: String(Math.floor(Date.now() / 1000)),
        }];
      }
      if (scenario === 'finish' || scenario === 'finish_only_waba') {
        response = {
          status: 'connected',
          authResponse: { code: s.code, userID: '', expiresIn: null, graphDomain: 'facebook', data_access_expiration_time: 0 },
        };
      }
      const sendMessage = () => message && post(message[0], message[1]);
      const sendCode = () => callback(response);
      if (s.order === 'code-first') {
        setTimeout(sendCode, delay);
        setTimeout(sendMessage, delay * 2);
      } else {
        setTimeout(sendMessage, delay);
        setTimeout(sendCode, delay * 2);
      }
    },
    __calls: calls,
  };

  // The real SDK calls window.fbAsyncInit once it has loaded.
  if (typeof window.fbAsyncInit === 'function') {
    setTimeout(window.fbAsyncInit, 0);
  }
})();
