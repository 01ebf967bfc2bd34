"""The math panel: the equations each tab uses, as Markdown with LaTeX ($...$ inline, $$...$$ display).

Render with ``LATEX_DELIMITERS`` (Gradio's Markdown only knows $$...$$ unless told otherwise).
"""
from __future__ import annotations

LATEX_DELIMITERS = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

FORWARD = r"""
### Forward diffusion (tabs *Forward diffusion* and *Compare schedules*)
One step adds a little Gaussian noise (Ho et al. 2020, eq. 2):
$$q(x_t \mid x_{t-1}) = \mathcal{N}\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big), \qquad \alpha_t = 1-\beta_t,\quad \bar\alpha_t = \prod_{s=1}^{t}\alpha_s$$
and any step in closed form (eq. 4), used for the slider:
$$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, \qquad \epsilon \sim \mathcal{N}(0, I)$$
so the mean coefficient is $\sqrt{\bar\alpha_t}$, the variance $1-\bar\alpha_t$, and the signal-to-noise ratio
$\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$.

Schedules: linear $\beta_t$ from $10^{-4}$ to $0.02$ (Ho et al.); cosine (Nichol & Dhariwal 2021, eq. 17)
$$\bar\alpha_t = \frac{f(t)}{f(0)}, \qquad f(t) = \cos^2\!\Big(\frac{t/T + s}{1+s}\cdot\frac{\pi}{2}\Big),\quad s = 0.008,\qquad \beta_t = \min\Big(1-\frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ 0.999\Big).$$
"Near pure noise" in *Compare schedules* counts the steps with $\bar\alpha_t < 0.01$.

The pixel histogram of *Forward diffusion*: pooled over the image's $D$ values, $x_t$'s values follow the mixture
$\frac{1}{D}\sum_i \mathcal{N}\big(\sqrt{\bar\alpha_t}\,x_{0,i},\ 1-\bar\alpha_t\big)$, so a bar over $[a, b)$ has the expected
height (the line; $\Phi$ is the standard normal CDF)
$$\frac{1}{D\,(b-a)}\sum_{i=1}^{D} \Big[\Phi\Big(\frac{b-\sqrt{\bar\alpha_t}\,x_{0,i}}{\sqrt{1-\bar\alpha_t}}\Big)-\Phi\Big(\frac{a-\sqrt{\bar\alpha_t}\,x_{0,i}}{\sqrt{1-\bar\alpha_t}}\Big)\Big]$$
and the pooled mean and variance are
$$\mu_t = \sqrt{\bar\alpha_t}\,\mu_0, \qquad \sigma_t^2 = \bar\alpha_t\,\sigma_0^2 + 1-\bar\alpha_t,$$
which reach $0$ and $1$ as $\bar\alpha_t \to 0$: the image's values become those of pure noise $\mathcal{N}(0, 1)$.
"""

REVERSE = r"""
### Reverse diffusion (tab *Reverse diffusion*)
The network predicts the noise $\epsilon_\theta(x_t, t, y)$. DDPM (Ho et al. 2020, Algorithm 2):
$$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)\Big) + \sigma_t z, \qquad z \sim \mathcal{N}(0, I)\ (z = 0 \text{ at the last step})$$
with $\sigma_t^2 = \tilde\beta_t = \beta_t \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}$ (the posterior variance, eq. 7; used here: it gave
clearly better digits with respaced steps) or the paper's other choice $\sigma_t^2 = \beta_t$.
DDIM with $\eta = 0$ (Song et al. 2021, eq. 12), deterministic:
$$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}}\,\epsilon_\theta(x_t, t)$$
Fewer steps (Nichol & Dhariwal 2021, sec. 4): keep steps $s_1 < \dots < s_n$ and use
$\beta'_i = 1 - \bar\alpha_{s_i}/\bar\alpha_{s_{i-1}}$; the network is still called with the original $t = s_i$.
Sampling with the *other* schedule, or at Karras noise levels: each step's $\bar\alpha'$ comes from that schedule, and the
network is called at its training step of the same $\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}$, interpolated in
$\log\sigma$ between the two training steps around it (a fractional $t$, as diffusers does).

Classifier-free guidance (Ho & Salimans 2022) with scale $w$ ($w = 1$: plain conditional, $w = 0$: unconditional):
$$\tilde\epsilon = \epsilon_\theta(x_t, t, \varnothing) + w\,\big(\epsilon_\theta(x_t, t, y) - \epsilon_\theta(x_t, t, \varnothing)\big)$$
"""

SAMPLERS = r"""
### The samplers of today's libraries (tab *Reverse diffusion*, sampler)
Divide $x_t$ by $\sqrt{\bar\alpha_t}$: $x = x_t/\sqrt{\bar\alpha_t} = x_0 + \sigma\,\epsilon$ with
$\sigma = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$ (Karras et al. 2022, Table 1). With the denoiser's
$D(x;\sigma) = \hat x_0$, the probability-flow ODE is (their eq. 4, with $\sigma(t) = t$)
$$\frac{dx}{d\sigma} = d = \frac{x - D(x;\sigma)}{\sigma} \;(= \hat\epsilon).$$
**Euler** (their Algorithm 1 without the second stage): $x' = x + (\sigma' - \sigma)\,d$, then
$x_{t'} = \sqrt{\bar\alpha_{t'}}\,x'$. Written out, this is DDIM with $\eta = 0$ (Song et al. 2021, eq. 14 is the same ODE):
the app shows both give the same walk to $10^{-9}$ on the exact denoiser.
**Euler ancestral**: step down to $\sigma_{down}$ along $d$, then add fresh noise $\sigma_{up} z$, with
$\sigma_{up} = \sqrt{\sigma'^2(\sigma^2-\sigma'^2)/\sigma^2}$ and $\sigma_{down}^2 + \sigma_{up}^2 = \sigma'^2$
(k-diffusion's ancestral step): carried back to $x_t$ it is DDIM with $\eta = 1$, DDPM's posterior.
**Heun** (Karras et al. 2022, Algorithm 1, lines 8–11): the Euler step is a predictor $x_p$; a second network call there
gives $d' = (x_p - D(x_p;\sigma'))/\sigma'$ and the step uses the average:
$$x' = x + (\sigma' - \sigma)\,\tfrac{1}{2}(d + d'),$$
two network calls a step (one into $\sigma' = 0$), second order: its error falls 4x when the steps double, Euler's 2x.
**DPM-Solver++(2M)** (Lu et al. 2022, Algorithm 2) in $\alpha = \sqrt{\bar\alpha}$, $\sigma_t = \sqrt{1-\bar\alpha}$,
$\lambda = \log(\alpha/\sigma_t)$, $h = \lambda_{t'} - \lambda_t$, $r = h_{last}/h$:
$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\,(e^{-h} - 1)\Big[\big(1 + \tfrac{1}{2r}\big)\hat x_0 - \tfrac{1}{2r}\,\hat x_0^{last}\Big],$$
one network call a step, second order from the $\hat x_0$ it already has (first order at the first and the last step).
**Karras spacing** (their eq. 5, $\rho = 7$): $\sigma_i = \big(\sigma_{max}^{1/\rho} + \tfrac{i}{n-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho})\big)^\rho$,
dense at low noise, where the picture's details form. Network calls (NFE) are what a sampler costs: guidance doubles the
batch of each call, not the number of calls.
"""

NOISE_REMOVAL = r"""
### Subtract all the predicted noise (tab *Subtract all predicted noise*)
Solving the closed form for $x_0$ with the predicted noise (Ho et al. 2020, eq. 15):
$$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}}$$
At large $t$, $1/\sqrt{\bar\alpha_t}$ is huge (about 157 at $t = T$ for the linear schedule), so small errors in
$\epsilon_\theta$ blow up; the pictures are clipped to $[-1, 1]$ for display. For a real digit the errors are
$\tfrac{1}{D}\lVert\epsilon_\theta - \epsilon\rVert^2$ and $\tfrac{1}{D}\lVert\hat x_0 - x_0\rVert^2$ ($D$ pixels).
The training loss is the first one: $L_\text{simple} = \mathbb{E}_{t, x_0, \epsilon}\lVert \epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon,\ t)\rVert^2$.
"""

ARCHITECTURE = r"""
### The U-Net (tab *Architecture*)
Time embedding (Transformer sinusoids, $d$ = base channels, $k = 0..d/2-1$):
$$e(t) = \big[\cos(t\,\omega_k),\ \sin(t\,\omega_k)\big], \qquad \omega_k = 10000^{-2k/d}$$
then $\mathrm{emb} = \mathrm{MLP}(e(t)) + E[y]$, and in each residual block
$$h = \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(x))) + W\,\mathrm{emb}, \qquad \mathrm{out} = \mathrm{skip}(x) + \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(h)))$$
"""

LAB = r"""
### The exact denoiser (tab *2D lab*)
For a finite data set $\{x_i\}_{i=1}^N$ the forward marginal is a Gaussian mixture (Ho et al. 2020, eq. 4 for each point)
$$q(x_t) = \frac{1}{N}\sum_{i=1}^N \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\,x_i,\ (1-\bar\alpha_t) I\big),$$
the heat map of the forward view. By Bayes' rule the best possible denoiser (the minimiser of $L_\text{simple}$) is the
posterior mean, a weighted average of the training points:
$$\mathbb{E}[x_0 \mid x_t] = \sum_{i=1}^N w_i\,x_i, \qquad w_i = \frac{\exp\!\big(-\lVert x_t - \sqrt{\bar\alpha_t}\,x_i\rVert^2 / 2(1-\bar\alpha_t)\big)}{\sum_j \exp\!\big(-\lVert x_t - \sqrt{\bar\alpha_t}\,x_j\rVert^2 / 2(1-\bar\alpha_t)\big)},$$
and its noise prediction follows from the closed form:
$$\epsilon^*(x_t, t) = \frac{x_t - \sqrt{\bar\alpha_t}\,\mathbb{E}[x_0 \mid x_t]}{\sqrt{1-\bar\alpha_t}}.$$
It averages over $N_\text{eff} = 1 / \sum_i w_i^2$ points (the tour's last question): all of them at large $t$, the
nearest one at small $t$, so its reverse walk returns training points (memorisation). With a class $y$, the sums
run over that class's points only. The arrows show $-\hat\epsilon$, which points towards the data: the score is
$\nabla_{x_t} \log q(x_t) = -\epsilon^*(x_t, t) / \sqrt{1-\bar\alpha_t}$.
The distance numbers are sliced Wasserstein distances: the average over random unit directions $\theta$ of the
1D Wasserstein-1 distance (the mean absolute difference of the sorted values) between the projections
$\theta^\top x$ of the particles and of fresh data; the floor is the same distance between two fresh data sets.
"""

ALL = "\n".join([FORWARD, REVERSE, SAMPLERS, NOISE_REMOVAL, ARCHITECTURE, LAB])
