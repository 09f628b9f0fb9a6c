/** A few client routes need no router library: the History API and one hook. */
import { useEffect, useState } from 'react';

export interface Place {
  pathname: string;
  search: string;
}

function current(): Place {
  return { pathname: location.pathname, search: location.search };
}

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  if (options.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

export function useLocation(): Place {
  const [place, setPlace] = useState<Place>(current);
  useEffect(() => {
    const on = () => setPlace(current());
    window.addEventListener('popstate', on);
    return () => window.removeEventListener('popstate', on);
  }, []);
  return place;
}
