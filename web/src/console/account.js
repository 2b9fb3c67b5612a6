// The console's account page (being built).
export async function render(ctx) {
  ctx.root.textContent = "";
}
