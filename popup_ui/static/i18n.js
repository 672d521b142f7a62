// Every string the staff UI shows, in Japanese (the default) and English.
//
// t(key, params) looks a key up in the current language and fills {name}
// placeholders. Strings are plain text: callers put them into the DOM with
// textContent, never as HTML. This module knows words, not calls or sockets.

const STORAGE_KEY = "callpop.lang";
export const LANGUAGES = ["ja", "en"];

const STRINGS = {
  ja: {
    "login.heading": "ログイン",
    "login.login": "ログインID",
    "login.password": "パスワード",
    "login.submit": "ログイン",
    "login.busy": "確認しています…",
    "login.failed": "ログインIDまたはパスワードが違います",
    "login.throttled": "ログインの試行が多すぎます。しばらくしてからお試しください",
    "login.unreachable": "サーバーに接続できません。ネットワークを確認してください",
    "login.overloaded": "ただいま混み合っています。少し待ってからもう一度お試しください",
    "login.lead": "着信時にお客様情報を表示します",
    "board.heading": "着信ボード",
    "board.ringing": "着信中",
    "board.recent": "最近の着信",
    "board.empty": "着信を待っています",
    "board.emptyHint": "電話が鳴ると、ここにお客様の情報が表示されます。",
    "board.recentEmpty": "まだ着信はありません",
    "header.staff": "{name} さん",
    "header.logout": "ログアウト",
    "header.language": "言語",
    "conn.connecting": "接続しています…",
    "conn.open": "接続中",
    "conn.reconnecting": "再接続中…",
    "notify.enable": "デスクトップ通知を有効にする",
    "notify.denied": "通知はブラウザでブロックされています",
    "notify.on": "デスクトップ通知: オン",
    "notify.title": "着信: {who}",
    "announce.ringing": "着信: {who}",
    "announce.many": "着信 {count}件",
    "title.ringing": "着信: {who}",
    "title.idle": "着信ボード — callpop",
    "call.at": "{time} 着信",
    "call.endedAt": "{time} 終了",
    "call.display": "発信者名: {name}",
    "call.line": "着信回線: {line}",
    "call.answered": "応答中",
    "honorific": "{name} 様",
    "customer.company": "{company}",
    "customer.rank": "ランク {rank}",
    "customer.phone": "{label}",
    "customer.phoneOwner": "{owner} の番号",
    "customer.assigned": "担当: {name}",
    "customer.assignedExt": "担当: {name} (内線 {ext})",
    "customer.noAssigned": "担当者未設定",
    "transfer.hint": "担当者へ転送 (内線 {ext})",
    "transfer.copy": "内線番号をコピー",
    "transfer.copied": "内線 {ext} をコピーしました",
    "transfer.copyFailed": "電話機で内線 {ext} へ転送してください",
    "customer.preferences": "好み",
    "customer.memo": "メモ",
    "customer.birthday": "本日誕生日",
    "customer.daysSince": "前回連絡から{days}日",
    "customer.daysSinceToday": "前回連絡: 本日",
    "customer.transactions": "取引履歴",
    "customer.notes": "対応履歴",
    "customer.family": "この番号のお客様: {count}名",
    "status.unknown": "未登録の番号",
    "status.invalid": "番号を判別できません",
    "status.internal": "内線 {ext}",
    "status.internalLead": "社内からの着信",
    "status.degraded.timeout": "顧客情報の読み込みが遅れています。届きしだい表示します",
    "status.degraded.database": "データベースに接続できないため、番号だけを表示しています",
    "status.degraded.error": "顧客情報を読み込めませんでした",
    "status.noNumber": "番号なし",
    "previous.count": "過去の着信 {count}回",
    "previous.last": "最終 {date}",
    "previous.none": "初めての着信です",
    "withheld.anonymous": "非通知",
    "withheld.payphone": "公衆電話",
    "withheld.unavailable": "表示圏外",
    "withheld.interaction": "他サービス経由",
    "withheld.lead": "番号が通知されていません",
    "outcome.answered_elsewhere": "他の人が応答しました",
    "outcome.abandoned": "不在着信 — 相手が切りました",
    "outcome.timeout": "応答なし",
    "outcome.hangup": "通話終了",
    "outcome.gone": "着信は終了しました",
    "claim.button": "応答しました",
    "claim.busy": "送信しています…",
    "claim.active": "{name}が応答中",
    "claim.ended": "応答: {name}",
    "claim.ext": "内線 {ext}",
    "claim.someone": "他の人",
    "claim.failed": "応答を記録できませんでした。もう一度お試しください",
    "note.heading": "対応メモ",
    "note.callAt": "{date} {time} の通話",
    "note.body": "内容",
    "note.placeholder": "お客様とのやり取りを記入してください",
    "note.tags": "タグ",
    "note.tag.quote": "見積依頼",
    "note.tag.booking": "予約",
    "note.tag.complaint": "クレーム",
    "note.tag.inquiry": "問い合わせ",
    "note.tag.other": "その他",
    "note.followUp": "次回対応日",
    "note.newCustomer": "新規顧客として登録",
    "note.newName": "お名前",
    "note.newFurigana": "ふりがな",
    "note.newNumber": "電話番号: {number}",
    "note.newHint": "お名前を入れると、この番号の次の着信から表示されます",
    "note.save": "保存",
    "note.shortcut": "Ctrl+Enter で保存",
    "note.discard": "破棄",
    "note.discardConfirm": "書きかけのメモを破棄しますか？",
    "note.discardYes": "破棄する",
    "note.discardNo": "戻る",
    "note.close": "閉じる",
    "note.saving": "保存中…",
    "note.saved": "保存しました",
    "note.pending": "送信待ち (再試行します)",
    "note.empty": "内容を入力してください",
    "note.failed": "保存できませんでした: {detail}",
    "note.savedBy": "{staff} ({date} {time})",
    "note.followUpOn": "次回対応日: {date}",
    "note.newCustomerSaved": "新規顧客: {name} 様",
    "view.label": "表示",
    "missed.tab": "不在着信",
    "missed.heading": "不在着信",
    "missed.lead": "応答できなかった着信です。折り返したら「折り返し済み」を押してください。",
    "missed.empty": "未対応の不在着信はありません",
    "missed.emptyResolved": "不在着信はありません",
    "missed.attempts": "{count}回",
    "missed.attemptsLabel": "着信回数",
    "missed.last": "最終 {date} {time}",
    "missed.first": "最初 {date} {time}",
    "missed.calledBack": "折り返し済み",
    "missed.noAction": "対応不要",
    "missed.note": "メモ (任意)",
    "missed.showResolved": "対応済みも表示",
    "missed.status.called_back": "折り返し済み",
    "missed.status.no_action": "対応不要",
    "missed.resolved": "{status}: {name} ({date} {time})",
    "missed.resolvedNote": "メモ: {note}",
    "missed.loadFailed": "不在着信を読み込めませんでした",
    "missed.resolveFailed": "記録できませんでした: {detail}",
    "missed.refresh": "更新",
    "missed.count": "未対応 {count}件",
    "presence.heading": "スタッフ",
    "presence.idle": "待機中",
    "presence.ringing": "呼出中",
    "presence.busy": "通話中",
    "presence.unknown": "不明",
    "presence.me": "(自分)",
    "presence.noName": "(名前なし)",
    "presence.warn.busy": "{name}は通話中です",
    "presence.warn.ringing": "{name}は呼出中です",
    "presence.warn.unknown": "{name}の状態は不明です",
    "handover.heading": "転送メモ",
    "handover.noteInput": "転送メモの内容",
    "handover.placeholder": "転送先に伝えること (1行)",
    "handover.to": "転送先",
    "handover.option": "{name} (内線 {ext}) {presence}",
    "handover.send": "転送メモ",
    "handover.sending": "送信しています…",
    "handover.sent": "{to}へ転送メモを送りました。電話で転送してください",
    "handover.failed": "転送メモを送れませんでした: {detail}",
    "handover.unreachable": "サーバーに接続できません",
    "handover.empty": "転送メモを入力してください",
    "handover.nobody": "転送先の状態がわかりません (内線が監視されていません)",
    "handover.line.requested": "{from} → {to}へ転送",
    "handover.line.ringing": "{from} → {to}へ転送 (呼出中)",
    "handover.line.answered": "{from} → {to}へ転送 (応答済み)",
    "handover.noteLabel": "転送メモ:",
    "handover.noteFrom": "({from}より)",
    "handover.announce": "{from}から転送: {note}",
  },
  en: {
    "login.heading": "Log in",
    "login.login": "Login ID",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.busy": "Checking…",
    "login.failed": "Wrong login ID or password",
    "login.throttled": "Too many attempts. Please wait a moment and try again",
    "login.unreachable": "Cannot reach the server. Check the network",
    "login.overloaded": "The server is busy. Please wait a moment and try again",
    "login.lead": "Shows who is calling when the phone rings",
    "board.heading": "Call board",
    "board.ringing": "Ringing",
    "board.recent": "Recent calls",
    "board.empty": "Waiting for calls",
    "board.emptyHint": "When the phone rings, the caller's details appear here.",
    "board.recentEmpty": "No calls yet",
    "header.staff": "{name}",
    "header.logout": "Log out",
    "header.language": "Language",
    "conn.connecting": "Connecting…",
    "conn.open": "Connected",
    "conn.reconnecting": "Reconnecting…",
    "notify.enable": "Enable desktop notifications",
    "notify.denied": "Notifications are blocked in this browser",
    "notify.on": "Desktop notifications: on",
    "notify.title": "Call: {who}",
    "announce.ringing": "Call: {who}",
    "announce.many": "{count} incoming calls",
    "title.ringing": "Call: {who}",
    "title.idle": "Call board — callpop",
    "call.at": "Rang {time}",
    "call.endedAt": "Ended {time}",
    "call.display": "Caller name: {name}",
    "call.line": "Line: {line}",
    "call.answered": "In call",
    "honorific": "{name}",
    "customer.company": "{company}",
    "customer.rank": "Rank {rank}",
    "customer.phone": "{label}",
    "customer.phoneOwner": "{owner}'s number",
    "customer.assigned": "Assigned: {name}",
    "customer.assignedExt": "Assigned: {name} (ext. {ext})",
    "customer.noAssigned": "No assigned staff",
    "transfer.hint": "Transfer to assigned staff (ext. {ext})",
    "transfer.copy": "Copy extension",
    "transfer.copied": "Copied extension {ext}",
    "transfer.copyFailed": "Transfer to extension {ext} on your phone",
    "customer.preferences": "Preferences",
    "customer.memo": "Memo",
    "customer.birthday": "Birthday today",
    "customer.daysSince": "{days} days since last contact",
    "customer.daysSinceToday": "Last contact: today",
    "customer.transactions": "Transactions",
    "customer.notes": "Notes",
    "customer.family": "Customers on this number: {count}",
    "status.unknown": "Unknown number",
    "status.invalid": "Unrecognised number",
    "status.internal": "Extension {ext}",
    "status.internalLead": "Internal call",
    "status.degraded.timeout": "Customer details are late; they will show as soon as they arrive",
    "status.degraded.database": "The database cannot be reached: showing the number only",
    "status.degraded.error": "Could not load customer details",
    "status.noNumber": "No number",
    "previous.count": "Called {count} times before",
    "previous.last": "last {date}",
    "previous.none": "First call from this number",
    "withheld.anonymous": "Withheld (anonymous)",
    "withheld.payphone": "Payphone",
    "withheld.unavailable": "Unavailable",
    "withheld.interaction": "Via another service",
    "withheld.lead": "The caller's number is not shown",
    "outcome.answered_elsewhere": "Answered by someone else",
    "outcome.abandoned": "Missed — the caller hung up",
    "outcome.timeout": "No answer",
    "outcome.hangup": "Call ended",
    "outcome.gone": "The call has ended",
    "claim.button": "I answered",
    "claim.busy": "Sending…",
    "claim.active": "{name} is on the call",
    "claim.ended": "Answered by {name}",
    "claim.ext": "ext. {ext}",
    "claim.someone": "someone else",
    "claim.failed": "Could not record the answer. Please try again",
    "note.heading": "Call note",
    "note.callAt": "Call at {date} {time}",
    "note.body": "Note",
    "note.placeholder": "What did the caller want?",
    "note.tags": "Tags",
    "note.tag.quote": "Quote request",
    "note.tag.booking": "Booking",
    "note.tag.complaint": "Complaint",
    "note.tag.inquiry": "Inquiry",
    "note.tag.other": "Other",
    "note.followUp": "Next follow-up",
    "note.newCustomer": "Register as a new customer",
    "note.newName": "Name",
    "note.newFurigana": "Furigana",
    "note.newNumber": "Phone: {number}",
    "note.newHint": "With a name, the next call from this number shows it",
    "note.save": "Save",
    "note.shortcut": "Ctrl+Enter saves",
    "note.discard": "Discard",
    "note.discardConfirm": "Discard this unsaved note?",
    "note.discardYes": "Discard",
    "note.discardNo": "Keep",
    "note.close": "Close",
    "note.saving": "Saving…",
    "note.saved": "Saved",
    "note.pending": "Waiting to send (will retry)",
    "note.empty": "Please write the note first",
    "note.failed": "Could not save: {detail}",
    "note.savedBy": "{staff} ({date} {time})",
    "note.followUpOn": "Follow up on {date}",
    "note.newCustomerSaved": "New customer: {name}",
    "view.label": "View",
    "missed.tab": "Missed calls",
    "missed.heading": "Missed calls",
    "missed.lead": "Calls nobody answered. Press “Called back” once you have returned the call.",
    "missed.empty": "No missed calls to follow up",
    "missed.emptyResolved": "No missed calls",
    "missed.attempts": "{count}×",
    "missed.attemptsLabel": "Attempts",
    "missed.last": "last {date} {time}",
    "missed.first": "first {date} {time}",
    "missed.calledBack": "Called back",
    "missed.noAction": "No action needed",
    "missed.note": "Note (optional)",
    "missed.showResolved": "Show resolved",
    "missed.status.called_back": "Called back",
    "missed.status.no_action": "No action needed",
    "missed.resolved": "{status}: {name} ({date} {time})",
    "missed.resolvedNote": "Note: {note}",
    "missed.loadFailed": "Could not load the missed calls",
    "missed.resolveFailed": "Could not record it: {detail}",
    "missed.refresh": "Refresh",
    "missed.count": "{count} to follow up",
    "presence.heading": "Staff",
    "presence.idle": "Idle",
    "presence.ringing": "Ringing",
    "presence.busy": "On a call",
    "presence.unknown": "Unknown",
    "presence.me": "(you)",
    "presence.noName": "(no name)",
    "presence.warn.busy": "{name} is on a call",
    "presence.warn.ringing": "{name}'s phone is ringing",
    "presence.warn.unknown": "{name}'s status is unknown",
    "handover.heading": "Hand-over note",
    "handover.noteInput": "Hand-over note",
    "handover.placeholder": "One line for the colleague you transfer to",
    "handover.to": "To",
    "handover.option": "{name} (ext. {ext}) {presence}",
    "handover.send": "Hand-over note",
    "handover.sending": "Sending…",
    "handover.sent": "Note sent to {to}. Transfer the call on your phone",
    "handover.failed": "Could not send the note: {detail}",
    "handover.unreachable": "Cannot reach the server",
    "handover.empty": "Write the note first",
    "handover.nobody": "No colleague's status is known (no extension is watched)",
    "handover.line.requested": "{from} → {to}: transfer",
    "handover.line.ringing": "{from} → {to}: transfer (ringing)",
    "handover.line.answered": "{from} → {to}: transfer (answered)",
    "handover.noteLabel": "Hand-over note:",
    "handover.noteFrom": "(from {from})",
    "handover.announce": "Transfer from {from}: {note}",
  },
};

let current = "ja";

/** The language in use: "ja" or "en". */
export function language() {
  return current;
}

/** Pick the language: the stored choice, else the server's default, else Japanese. */
export function initLanguage(serverDefault) {
  let stored = null;
  try {
    stored = window.localStorage.getItem(STORAGE_KEY);
  } catch {
    stored = null; // storage disabled: fall back to the default
  }
  if (LANGUAGES.includes(stored)) {
    current = stored;
  } else if (LANGUAGES.includes(serverDefault)) {
    current = serverDefault;
  } else {
    current = "ja";
  }
  document.documentElement.lang = current;
  return current;
}

/** Use the server's default language unless this browser chose one. True if it changed. */
export function applyServerDefault(lang) {
  let stored = null;
  try {
    stored = window.localStorage.getItem(STORAGE_KEY);
  } catch {
    stored = null;
  }
  if (LANGUAGES.includes(stored) || !LANGUAGES.includes(lang) || lang === current) return false;
  current = lang;
  document.documentElement.lang = lang;
  return true;
}

/** Switch language and remember the choice in this browser. */
export function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) return;
  current = lang;
  document.documentElement.lang = lang;
  try {
    window.localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // storage disabled: the choice lasts for this page only
  }
}

/** The string for `key` in the current language, with {placeholders} filled. */
export function t(key, params = {}) {
  const table = STRINGS[current] || STRINGS.ja;
  const template = key in table ? table[key] : STRINGS.ja[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (whole, name) =>
    name in params ? String(params[name] ?? "") : whole,
  );
}

/** Fill every element carrying data-i18n (text) or data-i18n-<attr> in `root`. */
export function translatePage(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
  }
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
}

export { STRINGS };
