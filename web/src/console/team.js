// The team page: the members with their roles (change, remove), the pending invitations
// (invite by email, revoke), leaving the organization and making a new one. What a role
// may do decides what shows (domain/administration.py): owners everything; admins
// everything but owners; members see the team and may leave. The API decides anyway.
import { api } from "../lib/api.js";
import { el, formatTime, status } from "../lib/dom.js";
import { t } from "../lib/i18n.js";
import {
  ORG_KEY,
  busy,
  byId,
  cell,
  confirmDialog,
  fieldError,
  isManager,
  show,
} from "./team_billing_common.js";

const ROLES = ["member", "admin", "owner"];

function roleName(role) {
  return ROLES.includes(role) ? t(`team.role_${role}`) : role;
}

// The invitation's expiry is epoch seconds (its creation an ISO string).
function epochOrIso(value) {
  return typeof value === "number" ? new Date(value * 1000).toISOString() : value;
}

function who(member) {
  return member.name || member.email;
}

// May `role` change or remove a member whose role is `target`? (Owners: anyone; admins:
// anyone but an owner; members: no one.)
function mayManage(role, target) {
  if (role === "owner") return true;
  return role === "admin" && target !== "owner";
}

function rolesGrantable(role) {
  return role === "owner" ? ROLES : role === "admin" ? ["member", "admin"] : [];
}

export async function render(ctx) {
  const { orgId, role, me } = ctx;
  if (!orgId) {
    status(t("team.no_org"), "info");
    wireNewOrg();
    return;
  }
  const base = `/api/orgs/${encodeURIComponent(orgId)}`;
  const params = new URLSearchParams(window.location.search);
  if (params.has("joined")) {
    status(t("team.joined", { name: ctx.org.name }), "ok");
    params.delete("joined");
    const query = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : ""));
  }

  async function loadMembers() {
    const { members } = await api("GET", `${base}/members`);
    const body = byId("members-body");
    const owners = members.filter((m) => m.role === "owner").length;
    body.replaceChildren(...members.map((member) => memberRow(member, owners)));
    return members;
  }

  function memberRow(member, owners) {
    const self = member.user_id === me.user.user_id;
    // The only owner keeps the role (the API would refuse: 409 last_owner).
    const soleOwner = member.role === "owner" && owners === 1;
    const nameCell = cell(
      t("team.col_name"),
      el("span", { class: "tb-strong" }, member.name || t("team.no_name")),
      self ? el("span", { class: "tb-badge" }, t("team.you")) : null,
    );
    const actions = el("div", { class: "tb-row-actions" });
    if (mayManage(role, member.role) && !soleOwner) {
      actions.append(
        el(
          "button",
          {
            type: "button",
            class: "secondary tb-small",
            "aria-label": t("team.change_role_for", { name: who(member) }),
            onclick: () => changeRole(member),
          },
          t("team.change_role"),
        ),
      );
      if (!self) {
        actions.append(
          el(
            "button",
            {
              type: "button",
              class: "danger tb-small",
              "aria-label": t("team.remove_for", { name: who(member) }),
              onclick: () => removeMember(member),
            },
            t("team.remove"),
          ),
        );
      }
    }
    return el(
      "tr",
      { "data-user": member.user_id },
      nameCell,
      cell(t("team.col_email"), member.email),
      cell(t("team.col_role"), el("span", { class: `tb-role tb-role-${member.role}` }, roleName(member.role))),
      cell(t("team.col_actions"), actions.children.length ? actions : null),
    );
  }

  async function changeRole(member) {
    const options = rolesGrantable(role).map((r) => [r, roleName(r)]);
    const done = await confirmDialog({
      title: t("team.change_role_title", { name: who(member) }),
      text: t("team.change_role_text"),
      confirmLabel: t("team.change_role_confirm"),
      danger: false,
      field: { label: t("team.col_role"), options, value: member.role },
      action: async (chosen) => {
        if (chosen === member.role) return "same";
        return api("PATCH", `${base}/members/${encodeURIComponent(member.user_id)}`, { role: chosen });
      },
    });
    if (done && done !== "same") {
      status(t("team.role_changed", { name: who(member), role: roleName(done.role) }), "ok");
      if (member.user_id === me.user.user_id) {
        window.location.reload(); // one's own role changed: what the page offers changes too
        return;
      }
      await loadMembers();
    }
  }

  async function removeMember(member) {
    const done = await confirmDialog({
      title: t("team.remove_title", { name: who(member) }),
      text: t("team.remove_text", { name: who(member), org: ctx.org.name }),
      confirmLabel: t("team.remove_confirm"),
      action: () => api("DELETE", `${base}/members/${encodeURIComponent(member.user_id)}`),
    });
    if (done) {
      status(t("team.removed", { name: who(member) }), "ok");
      await loadMembers();
    }
  }

  async function loadInvitations() {
    const { invitations } = await api("GET", `${base}/invitations`);
    const body = byId("invitations-body");
    body.replaceChildren(...invitations.map((invitation) => invitationRow(invitation)));
    show(byId("invitations-table"), invitations.length > 0);
    show(byId("invitations-empty"), invitations.length === 0);
  }

  function invitationRow(invitation) {
    const actions = el("div", { class: "tb-row-actions" });
    if (mayManage(role, invitation.role)) {
      actions.append(
        el(
          "button",
          {
            type: "button",
            class: "secondary tb-small",
            "aria-label": t("team.revoke_for", { email: invitation.email }),
            onclick: () => revoke(invitation),
          },
          t("team.revoke"),
        ),
      );
    }
    return el(
      "tr",
      { "data-invitation": invitation.invitation_id },
      cell(t("team.col_email"), invitation.email),
      cell(t("team.col_role"), roleName(invitation.role)),
      cell(t("team.col_sent"), formatTime(invitation.created_at)),
      cell(t("team.col_expires"), formatTime(epochOrIso(invitation.expires_at))),
      cell(t("team.col_actions"), actions.children.length ? actions : null),
    );
  }

  async function revoke(invitation) {
    const done = await confirmDialog({
      title: t("team.revoke_title"),
      text: t("team.revoke_text", { email: invitation.email }),
      confirmLabel: t("team.revoke_confirm"),
      action: () => api("DELETE", `${base}/invitations/${encodeURIComponent(invitation.invitation_id)}`),
    });
    if (done) {
      status(t("team.revoked", { email: invitation.email }), "ok");
      await loadInvitations();
    }
  }

  function wireInvite() {
    const form = byId("invite-form");
    const email = byId("invite-email");
    const select = byId("invite-role");
    if (role === "owner") {
      const owner = byId("invite-role-owner");
      owner.hidden = false;
      owner.disabled = false;
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const address = email.value.trim();
      if (!address || !email.checkValidity()) {
        fieldError(email, t("team.invite_email_invalid"));
        email.focus();
        return;
      }
      fieldError(email, null);
      const button = form.querySelector("button[type=submit]");
      await busy(button, async () => {
        try {
          const sent = await api("POST", `${base}/invitations`, { email: address, role: select.value });
          status(
            t(sent.replaced ? "team.invite_replaced" : "team.invite_sent", { email: sent.email }),
            "ok",
          );
          form.reset();
          await loadInvitations();
        } catch (error) {
          if (error.code === "invalid_email") fieldError(email, error.message);
          status(error.message, "error");
        }
      });
    });
  }

  function wireLeave(members) {
    const button = byId("leave-button");
    const owners = members.filter((m) => m.role === "owner");
    const lastOwner = role === "owner" && owners.length === 1;
    if (lastOwner) byId("leave-intro").textContent = t("team.leave_last_owner");
    button.disabled = false;
    button.addEventListener("click", async () => {
      const done = await confirmDialog({
        title: t("team.leave_title", { org: ctx.org.name }),
        text: t("team.leave_text", { org: ctx.org.name }),
        confirmLabel: t("team.leave_confirm"),
        action: () => api("DELETE", `${base}/members/${encodeURIComponent(me.user.user_id)}`),
      });
      if (done) {
        localStorage.removeItem(ORG_KEY);
        window.location.assign("/console");
      }
    });
  }

  wireNewOrg();
  const members = await loadMembers();
  wireLeave(members);
  if (isManager(role)) {
    show(byId("invitations-section"));
    wireInvite();
    await loadInvitations();
  } else {
    byId("members-intro").textContent = t("team.members_intro_member");
  }
}

function wireNewOrg() {
  const form = byId("new-org-form");
  const name = byId("new-org-name");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = name.value.trim();
    if (!value) {
      fieldError(name, t("team.new_org_name_missing"));
      name.focus();
      return;
    }
    fieldError(name, null);
    const button = form.querySelector("button[type=submit]");
    await busy(button, async () => {
      try {
        const made = await api("POST", "/api/orgs", { name: value });
        localStorage.setItem(ORG_KEY, made.org_id);
        window.location.assign(`/console/team?org=${encodeURIComponent(made.org_id)}`);
      } catch (error) {
        if (error.code === "invalid_request") fieldError(name, t("team.new_org_name_invalid"));
        status(error.message, "error");
      }
    });
  });
}
